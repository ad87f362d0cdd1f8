"""Export trained weights as the embedded default model: a diffusers-format folder in assets/.

    python -m training.export [--vae runs/vae/model] [--run runs/diffusion] [--out assets/models/default]

Weights are stored in fp16 (loaded as fp32 on the CPU). The text encoder is not
copied: noisebrush.json names "minilm-l6", the packed MiniLM in assets/models/default/minilm/
(training/pack_minilm.py), which every folder naming it shares.
Also fits the linear latent→RGB preview map on fresh world samples.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import torch
from diffusers import AutoencoderKL, ControlNetModel, DPMSolverMultistepScheduler, UNet2DConditionModel

from noisebrush.engine.previews import fit_linear_preview
from training.common import to_tensor
from training.train_diffusion import KINDS, NOISE_SCHEDULE
from training.world import generate

DEFAULTS = {"width": 128, "height": 128, "steps": 20, "guidance": 5.0, "scheduler": "DPM++ 2M"}


@torch.no_grad()
def fit_preview(vae: AutoencoderKL, n: int = 256, size: int = 128):
    rng = np.random.default_rng(4242)
    imgs = np.stack([generate(rng, size).image for _ in range(n)])
    lat = np.concatenate([(vae.encode(to_tensor(imgs[i : i + 32])).latent_dist.mean * vae.config.scaling_factor).numpy()
                          for i in range(0, n, 32)])  # fmt: skip
    h = size // 8
    small = np.stack([cv2.resize(im, (h, h), interpolation=cv2.INTER_AREA) for im in imgs]).astype(np.float32) / 127.5 - 1
    return fit_linear_preview(lat, small)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--vae", default="runs/vae/model")
    ap.add_argument("--run", default="runs/diffusion")
    ap.add_argument("--weights", default="ema", help="'ema' (averaged) or '' (raw) weights of the run")
    ap.add_argument("--out", default="assets/models/default")
    args = ap.parse_args()
    run = Path(args.run) / args.weights if args.weights else Path(args.run)
    out = Path(args.out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)

    vae = AutoencoderKL.from_pretrained(args.vae).eval()
    unet = UNet2DConditionModel.from_pretrained(run / "unet")
    half = torch.float16
    vae.to(half).save_pretrained(tmp / "vae")
    unet.to(half).save_pretrained(tmp / "unet")
    for kind in KINDS:
        ControlNetModel.from_pretrained(run / f"controlnet-{kind}").to(half).save_pretrained(tmp / "controlnets" / kind)
    DPMSolverMultistepScheduler(**NOISE_SCHEDULE, steps_offset=1, timestep_spacing="leading").save_pretrained(tmp / "scheduler")
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": "0.30.0",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "scheduler": ["diffusers", "DPMSolverMultistepScheduler"],
        "text_encoder": [None, None],
        "tokenizer": [None, None],
        "safety_checker": [None, None],
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
    }
    (tmp / "model_index.json").write_text(json.dumps(index, indent=1))
    meta = {
        "text_encoder": "minilm-l6",
        "defaults": DEFAULTS,
        "trained_on": "noisebrush procedural world (training/world.py)",
    }
    (tmp / "noisebrush.json").write_text(json.dumps(meta, indent=1))
    fit_preview(vae.float()).save(tmp)
    if (out / "README.md").exists():  # the model card and the packed text encoder are not made here
        shutil.copy(out / "README.md", tmp / "README.md")
    if (out / "minilm").is_dir():
        shutil.copytree(out / "minilm", tmp / "minilm")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"exported {out} ({total / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
