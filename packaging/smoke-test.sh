#!/usr/bin/env bash
# Build the bundle, then check it as a user's machine would: --version, --self-test, Qt platform plugins,
# and the desktop file. Prints size and build time. Slow (minutes): not part of `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
packaging/build-linux.sh
built=$(( $(date +%s) - start ))
app=dist/noisebrush
fail() { echo "SMOKE TEST FAILED: $*" >&2; exit 1; }
"$app/noisebrush" --version || fail "--version"
QT_QPA_PLATFORM=offscreen "$app/noisebrush" --self-test || fail "--self-test"
for plugin in libqxcb.so libqoffscreen.so; do
  find "$app" -name "$plugin" | grep -q . || fail "Qt platform plugin $plugin is missing from the bundle"
done
if command -v desktop-file-validate >/dev/null; then desktop-file-validate packaging/noisebrush.desktop || fail "desktop file"; fi
echo "smoke test passed: bundle $(du -sh "$app" | cut -f1), built in ${built} s"
