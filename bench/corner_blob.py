"""The embedded VAE decoder's corner blob: is any corner of a decoded picture worse than the rest?

    python bench/corner_blob.py [--vae assets/models/default/vae] [--n 100]

Decodes (encode → decode) held-out world pictures and takes each one's error map (mean absolute error over
RGB, 0–255). A 9×9 box mean over it gives patch errors. The figure is the largest patch error whose centre lies
within 24 px of a corner, against the median patch error; printed for the mean error map over all pictures (a
blob at a fixed place adds up there) and as the median of the per-picture ratios. Target ≤ 1.5×.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from training.common import to_tensor  # noqa: E402
from training.world import generate  # noqa: E402

HELD_OUT_SEED = 990_777  # training uses seeds < 1000
PATCH = 9
CORNER = 24


def patch_errors(err: torch.Tensor) -> torch.Tensor:
    """(H, W) error map → mean error of every 9×9 patch inside the picture, indexed by its top-left pixel."""
    return F.avg_pool2d(err[None, None], PATCH, stride=1)[0, 0]


def corner_ratio(err: torch.Tensor) -> tuple[float, tuple[int, int]]:
    """Worst corner patch over the median patch, and where that patch is."""
    patches = patch_errors(err)
    h, w = patches.shape
    near = CORNER - PATCH // 2  # patch centres within CORNER px of a corner
    corner = torch.zeros_like(patches, dtype=torch.bool)
    for ys in (slice(0, near), slice(h - near, h)):
        for xs in (slice(0, near), slice(w - near, w)):
            corner[ys, xs] = True
    worst = torch.where(corner, patches, torch.zeros_like(patches))
    idx = int(worst.argmax())
    centre = (idx // w + PATCH // 2, idx % w + PATCH // 2)
    return float(worst.flatten()[idx] / patches.median().clamp_min(1e-6)), centre


def error_maps(vae_dir: str, n: int, size: int = 128) -> list[torch.Tensor]:
    from noisebrush.engine.decode_margin import vae_with_margin

    vae = vae_with_margin(vae_dir)  # with its folder's decode margin, as the app decodes
    rng = np.random.default_rng(HELD_OUT_SEED)
    maps = []
    with torch.no_grad():
        for start in range(0, n, 10):
            x = to_tensor(np.stack([generate(rng, size).image for _ in range(min(10, n - start))]))
            rec = vae.decode(vae.encode(x).latent_dist.mode()).sample.clamp(-1, 1)
            maps.extend(((rec - x).abs().mean(1) * 127.5).unbind(0))
    return maps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--vae", default="assets/models/default/vae")
    ap.add_argument("--n", type=int, default=100)
    args = ap.parse_args()
    torch.set_num_threads(1)
    maps = error_maps(args.vae, args.n)
    mean_ratio, where = corner_ratio(torch.stack(maps).mean(0))
    per_picture = [corner_ratio(m)[0] for m in maps]
    mae = float(torch.stack(maps).mean())
    print(f"vae: {args.vae}  ({len(maps)} held-out pictures, 128 px)")
    print(f"worst corner patch / median patch, mean error map: {mean_ratio:.2f}x centred at (y, x) = {where}  (target <= 1.5)")
    print(f"same, median of per-picture ratios: {statistics.median(per_picture):.2f}x")
    print(f"mean absolute error: {mae:.2f} levels")


if __name__ == "__main__":
    main()
