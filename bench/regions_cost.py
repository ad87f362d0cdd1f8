"""What regions cost a denoising step: SD1.5-shaped random weights at 512 px, and the embedded model at 128 px.

    python bench/regions_cost.py [--size 512] [--regions 2] [--repeats 5]

A step is one UNet call on a CFG batch of 2. Each figure times that call without regions (one prompt's 77 tokens)
and with N regions (the background's and each region's tokens end to end, masked cross-attention processors of
engine/region_attention.py installed as the engine installs them), interleaved so that a busy machine slows both
alike, and prints the medians and their ratio (target <= 1.15 for SD1.5 at 512 px).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from noisebrush.engine.region_attention import RegionMasks, installed  # noqa: E402


def bands(n: int, size: int) -> list[np.ndarray]:
    """n vertical bands side by side as weight maps at latent size, plus the (empty) background."""
    out = [np.zeros((size, size), np.float32)]
    for i in range(n):
        w = np.zeros((size, size), np.float32)
        w[:, i * size // n : (i + 1) * size // n] = 1.0
        out.append(w)
    return out


def compare(unet, size_px: int, n: int, repeats: int, tokens: int = 77) -> tuple[float, float]:
    latent = size_px // 8
    dim = unet.config.cross_attention_dim
    x = torch.randn(2, unet.config.in_channels, latent, latent)
    t = torch.tensor([500, 500])
    plain = torch.randn(2, tokens, dim)
    joined = torch.randn(2, tokens * (n + 1), dim)
    masks = RegionMasks([(tokens, w) for w in bands(n, latent)], (latent, latent))

    def call(ehs) -> float:
        t0 = time.perf_counter()
        unet(x, t, encoder_hidden_states=ehs)
        return time.perf_counter() - t0

    a, b = [], []
    with torch.inference_mode():
        call(plain)  # warm both paths once
        with installed([unet], masks):
            call(joined)
        for _ in range(repeats):
            a.append(call(plain))
            with installed([unet], masks):
                b.append(call(joined))
    return statistics.median(a), statistics.median(b)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--regions", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    from gpu import build

    from noisebrush.engine.device import DeviceChoice, LoadOptions
    from noisebrush.engine.models import load_base

    torch.manual_seed(0)
    built = build("sd15", tiny=False, device=DeviceChoice("cpu", "float32"), options=LoadOptions())
    a, b = compare(built.model.components["unet"], args.size, args.regions, args.repeats)
    print(f"SD1.5-shaped UNet, {args.size} px, CFG batch 2: {a:.2f} s/step plain, {b:.2f} s/step with {args.regions} "
          f"regions: ratio {b / a:.3f} (target <= 1.15)")  # fmt: skip
    embedded = load_base("", DeviceChoice("cpu", "float32"), LoadOptions())
    unet = embedded.components["unet"]
    tokens = embedded.components["tokenizer"].model_max_length
    a, b = compare(unet, 128, args.regions, args.repeats * 8, tokens=tokens)
    print(f"embedded model UNet, 128 px, CFG batch 2: {a * 1000:.1f} ms/step plain, {b * 1000:.1f} ms/step with "
          f"{args.regions} regions: ratio {b / a:.3f}")  # fmt: skip


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
