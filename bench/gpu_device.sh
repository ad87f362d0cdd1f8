#!/bin/bash
# bench/gpu.py on a lent GPU machine: PyTorch and transformers are there, diffusers is not, and there is no network.
#
# Here, once:   sh training/lent_gpu/prepare.sh     fills .gpu/ (git-ignored) with .venv's diffusers, trimmed, as a tar
# There:        bash bench/gpu_device.sh run        (the device tool's run, carry [".gpu"], timeout_s 400)
#               unpacks diffusers, runs the main matrix (MAIN_S s budget) then the torch.compile rows (COMPILE_S s
#               cap), and writes $OUT/gpu.md (the table), $OUT/gpu.jsonl (every figure) and $OUT/gpu.log.
# Rehearse here on the CPU, as on a bare machine (no editable install, diffusers from the wheel):
#               TINY=1 PY=".venv/bin/python -S" PYTHONPATH=.venv/lib/python3.11/site-packages OUT=/tmp/gpu-out \
#                   bash bench/gpu_device.sh run
set -u
cd "$(dirname "$0")/.."
[ "${1:-}" = run ] || { echo "usage: bash bench/gpu_device.sh run   (after sh training/lent_gpu/prepare.sh here)" >&2; exit 2; }

T0=$(date +%s)
PY=${PY:-python3}
OUT=${OUT:-/tmp/gpu-out}
MAIN_S=${MAIN_S:-210}
COMPILE_S=${COMPILE_S:-125}
mkdir -p "$OUT"
SITE=$(mktemp -d /tmp/nb-site.XXXX)
if [ ! -f .gpu/site.tar.xz ]; then echo "no .gpu/site.tar.xz: run 'sh training/lent_gpu/prepare.sh' here first"; exit 1; fi
$PY -c "import sys, tarfile; tarfile.open('.gpu/site.tar.xz').extractall(sys.argv[1], filter='data')" "$SITE" || exit 1
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/nb-inductor}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | tee "$OUT/gpu.log"
$PY -c "import torch, diffusers, transformers, sys; print('python', sys.version.split()[0], 'torch', torch.__version__,
'diffusers', diffusers.__version__, diffusers.__file__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())" \
    2>&1 | tee -a "$OUT/gpu.log" || exit 1
EXTRA=()
if [ -n "${TINY:-}" ]; then EXTRA=(--tiny); MAIN_S=60; COMPILE_S=60; fi

echo "## main matrix, budget $MAIN_S s" | tee -a "$OUT/gpu.log"
timeout $((MAIN_S + 35)) $PY bench/gpu.py "${EXTRA[@]}" --part main --budget-s "$MAIN_S" --out "$OUT/gpu.md" \
    --json "$OUT/gpu.jsonl" 2>&1 | tee -a "$OUT/gpu.log"
echo "main exit ${PIPESTATUS[0]} at $(( $(date +%s) - T0 )) s" | tee -a "$OUT/gpu.log"

if [ -z "${TINY:-}" ]; then
    echo "## torch.compile rows, cap $COMPILE_S s" | tee -a "$OUT/gpu.log"
    timeout "$COMPILE_S" $PY bench/gpu.py --part compile --budget-s $((COMPILE_S - 10)) --out "$OUT/gpu.md" \
        --json "$OUT/gpu.jsonl" 2>&1 | tee -a "$OUT/gpu.log"
    RC=${PIPESTATUS[0]}
    [ "$RC" = 124 ] && echo "| compile rows stopped at the $COMPILE_S s cap |" | tee -a "$OUT/gpu.md" "$OUT/gpu.log"
    echo "compile exit $RC at $(( $(date +%s) - T0 )) s" | tee -a "$OUT/gpu.log"
fi
rm -rf "$SITE"
echo "done at $(( $(date +%s) - T0 )) s" | tee -a "$OUT/gpu.log"
