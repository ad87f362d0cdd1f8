#!/usr/bin/env bash
# Noisebrush installer for people with a GPU (or without): a private venv with locked requirements,
# the app, and an app-menu entry. Run it again to update; it changes nothing that is already right.
#   packaging/install-linux.sh [--cpu|--cuda] [--update] [--uninstall]
#   NOISEBRUSH_HOME sets where (default ~/.local/share/noisebrush); paths with spaces are fine.
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
home="${NOISEBRUSH_HOME:-$HOME/.local/share/noisebrush}"
venv="$home/venv"
flavour=""
action=install
for arg in "$@"; do
  case "$arg" in
    --cpu) flavour=cpu ;;
    --cuda) flavour=cuda ;;
    --update) action=update ;;
    --uninstall) action=uninstall ;;
    -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
    *) echo "unknown option: $arg" >&2; exit 2 ;;
  esac
done

if [ "$action" = uninstall ]; then
  if [ -x "$venv/bin/noisebrush" ]; then "$venv/bin/noisebrush" --uninstall-desktop-entry || true; fi
  rm -rf "$venv"
  echo "Noisebrush removed (your sketches and settings stay in ~/.local/share/Noisebrush)."
  exit 0
fi

if [ -z "$flavour" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then flavour=cuda; else flavour=cpu; fi
fi
lock="$src/packaging/requirements/linux-$flavour.txt"
[ -f "$lock" ] || { echo "no lock file for '$flavour': $lock" >&2; exit 2; }
echo "Installing Noisebrush ($flavour) into $home"

python="${PYTHON:-python3}"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || { echo "Python 3.10 or newer is needed" >&2; exit 2; }
mkdir -p "$home"
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
stamp="$venv/.noisebrush-lock"
if [ "$action" = update ] || ! cmp -s "$lock" "$stamp"; then
  "$venv/bin/python" -m pip install --upgrade pip >/dev/null
  "$venv/bin/python" -m pip install -r "$lock"
  cp "$lock" "$stamp"
fi
"$venv/bin/python" -m pip install --no-deps --upgrade "$src"
"$venv/bin/noisebrush" --install-desktop-entry
"$venv/bin/noisebrush" --version
echo "Done. Start Noisebrush from your app menu, or run: \"$venv/bin/noisebrush\""
