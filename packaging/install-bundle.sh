#!/usr/bin/env bash
# Install an unpacked Noisebrush bundle for this user: copy it and add the app menu entry.
#   ./install.sh [--uninstall]      (NOISEBRUSH_PREFIX sets where; default ~/.local/share/noisebrush/app)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
prefix="${NOISEBRUSH_PREFIX:-$HOME/.local/share/noisebrush/app}"
if [ "${1:-}" = "--uninstall" ]; then
  [ -x "$prefix/noisebrush" ] && "$prefix/noisebrush" --uninstall-desktop-entry || true
  rm -rf "$prefix"
  echo "removed $prefix"
  exit 0
fi
mkdir -p "$prefix"
if [ "$here" != "$(cd "$prefix" && pwd)" ]; then
  rm -rf "$prefix"
  cp -a "$here" "$prefix"
fi
"$prefix/noisebrush" --install-desktop-entry
echo "installed in $prefix"
