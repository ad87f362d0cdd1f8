#!/bin/sh
# Here, before a lent-GPU run (a training burst, or bench/gpu_device.sh): fill .gpu/ (git-ignored) with what the
# lent machine lacks: diffusers without the pipelines that neither training nor the engine's SD1.5/SDXL paths
# import, as one tar (about 2 MB; the whole wheel is 6 MB). The working tree travels too: 64 MiB in all.
set -e
V=${PYTHON:-.venv/bin/python}
rm -rf .gpu && mkdir -p .gpu/site
$V -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 -d .gpu/wheels \
    "diffusers==$($V -c 'import diffusers; print(diffusers.__version__)')" importlib_metadata
for w in .gpu/wheels/*.whl; do $V -m zipfile -e "$w" .gpu/site; done
find .gpu/site/diffusers/pipelines -mindepth 1 -maxdepth 1 -type d ! -name controlnet ! -name stable_diffusion ! -name stable_diffusion_xl -exec rm -rf {} +
tar cJf .gpu/site.tar.xz -C .gpu/site . && rm -rf .gpu/site .gpu/wheels
du -sh .gpu
git ls-files -co --exclude-standard -z | du -cb --files0-from=- | tail -1 \
    | awk '{printf "%.1f MB travel with the working tree (limit 67.1 MB = 64 MiB, with .gpu)\n", $1 / 1e6}'
