#!/usr/bin/env bash
# Build the one-folder bundle and a tarball with an installer, from a clean checkout.
#   packaging/build-linux.sh            → dist/noisebrush/ and dist/noisebrush-<version>-linux-<arch>.tar.gz
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${BUILD_VENV:-.venv}"
test -x "$VENV/bin/python" || python3 -m venv "$VENV"
# the bundle is built from the same locked versions the installer uses (CPU build: the bundle carries no CUDA)
"$VENV/bin/python" -m pip install -q -r packaging/requirements/linux-cpu.txt
"$VENV/bin/python" -m pip install -q --no-deps -e .
"$VENV/bin/python" -m pip install -q pyinstaller
start=$(date +%s)
"$VENV/bin/pyinstaller" --noconfirm --clean --distpath dist --workpath build/pyinstaller packaging/noisebrush.spec
version=$("$VENV/bin/python" -c 'import noisebrush; print(noisebrush.__version__)')
tarball="dist/noisebrush-${version}-linux-$(uname -m).tar.gz"
cp packaging/install-bundle.sh dist/noisebrush/install.sh
tar -C dist -czf "$tarball" noisebrush
echo "bundle: dist/noisebrush ($(du -sh dist/noisebrush | cut -f1)), tarball: $tarball ($(du -sh "$tarball" | cut -f1)), built in $(( $(date +%s) - start )) s"
