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

# The CUDA lock's torch is built for CUDA 13, which needs NVIDIA driver 580 or newer; an older driver gets the CPU build.
MIN_DRIVER=580
if [ -z "$flavour" ]; then
  flavour=cpu
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n1)
    if [ "${driver%%.*}" -ge "$MIN_DRIVER" ] 2>/dev/null; then
      flavour=cuda
    else
      echo "NVIDIA driver ${driver:-unknown} is older than $MIN_DRIVER: installing the CPU build (update the driver, then run --update --cuda)" >&2
    fi
  fi
fi
lock="$src/packaging/requirements/linux-$flavour.txt"
[ -f "$lock" ] || { echo "no lock file for '$flavour': $lock" >&2; exit 2; }
echo "Installing Noisebrush ($flavour) into $home"

python="${PYTHON:-python3}"
# the locks pin numpy and scipy releases that have wheels for Python 3.11 and newer only
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11 or newer is needed (set PYTHON=...)" >&2; exit 2; }
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
# Qt's xcb platform plugin needs these two, which minimal desktops may lack
if command -v ldconfig >/dev/null 2>&1; then
  missing=""
  for lib in libxcb-icccm.so.4:libxcb-icccm4 libxcb-keysyms.so.1:libxcb-keysyms1 libxcb-cursor.so.0:libxcb-cursor0; do
    ldconfig -p | grep -q "${lib%%:*}" || missing="$missing ${lib##*:}"
  done
  [ -z "$missing" ] || echo "Noisebrush's window needs:$missing. Install them with: sudo apt install$missing" >&2
fi
"$venv/bin/noisebrush" --version
echo "Done. Start Noisebrush from your app menu, or run: \"$venv/bin/noisebrush\""
