#!/bin/sh
# Here, before a burst: fill .gpu/ (git-ignored) with what the lent machine lacks: MiniLM, packed small, and
# diffusers without the pipelines that training never imports. The working tree travels too: 64 MiB in all.
set -e
V=${PYTHON:-.venv/bin/python}
rm -rf .gpu && mkdir -p .gpu/site
$V -m training.lent_gpu.minilm_pack pack .gpu/minilm
$V -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 -d .gpu/wheels \
    "diffusers==$($V -c 'import diffusers; print(diffusers.__version__)')" importlib_metadata
for w in .gpu/wheels/*.whl; do $V -m zipfile -e "$w" .gpu/site; done
find .gpu/site/diffusers/pipelines -mindepth 1 -maxdepth 1 -type d ! -name controlnet ! -name stable_diffusion -exec rm -rf {} +
tar cJf .gpu/site.tar.xz -C .gpu/site . && rm -rf .gpu/site .gpu/wheels
du -sh .gpu
