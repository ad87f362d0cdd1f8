#!/bin/bash
# There, from the repo root, with .gpu carried: train CONFIG for END_S seconds in all (setup and pools included),
# then pack its EMA snapshots into $OUT. Arguments are config overrides (key=value).
T0=$(date +%s)
CONFIG=${CONFIG:-training/configs/diffusion-gpu.json}
W=$(mktemp -d) || exit 1  # a private folder: fixed /tmp paths could be anyone's, and stale
mkdir -p "$W/site" && python3 -c "import sys, tarfile; tarfile.open('.gpu/site.tar.xz').extractall(sys.argv[1], filter='data')" "$W/site" || exit 1
export PYTHONPATH="$W/site:$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch, diffusers, transformers; print(torch.__version__, diffusers.__version__, transformers.__version__, torch.cuda.is_available())" || exit 1
RUN=$(python3 -c "import json, sys; print(json.load(open(sys.argv[1]))['out_dir'])" "$CONFIG")
for a in "$@"; do case $a in out_dir=*) RUN=${a#out_dir=} ;; esac; done
B=$(( ${END_S:-500} - ($(date +%s) - T0) ))
echo "training budget $B s"
timeout $((B + 40)) python3 -m ${MODULE:-training.train_diffusion} --config "$CONFIG" time_budget_s=$B "$@" 2>&1 \
    | grep --line-buffered -v "Loading weights" | tee "$OUT/train.log" \
    | grep --line-buffered -E "^(step +[0-9]*000 |time|pool .*0000/|warm|Trace|  File|[A-Za-z]*Error)"
echo "train exit ${PIPESTATUS[0]} at $(( $(date +%s) - T0 )) s"
python3 training/lent_gpu/ema_pack.py pack "$RUN" "$OUT"
echo "done at $(( $(date +%s) - T0 )) s"
