"""The corner ring of the embedded model's pictures (issue 30): is the bottom-right corner busier than the others?

    python bench/corner_ring.py [--model FOLDER] [--n 60] [--steps 20,4]

The figure, on generated pictures: for each 128 px picture whose sketched shapes touch none of the four 24 px corner
squares, the 98th percentile of each pixel's RGB distance from its square's median colour, in the bottom-right
square over max(4, the mean of the other three); averaged over pictures. 1 is no ring; the target is ≤ 1.3.

Where it comes from, each measured alone:
- generated: held-out world scenes through the scribble ControlNet (the figure), at each --steps;
- latents: the same runs' final x0 through the linear latent→RGB map (no VAE decoder), 8× nearest upsampled;
- plain backgrounds: "a plain <colour> background", no control at all, and the same through the scribble
  ControlNet with an empty sketch (UNet alone vs ControlNet);
- VAE: the world pictures themselves, encoded and decoded (the decoder alone).
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from noisebrush.engine.backends.local import LocalBackend  # noqa: E402
from noisebrush.engine.events import Finished, Preview  # noqa: E402
from noisebrush.engine.request import ControlSpec, GenerationRequest  # noqa: E402
from training.world import PALETTE, generate  # noqa: E402

SEED = 990_555  # training seeds are < 1000
CORNER = 24


def ring_ratio(image: np.ndarray) -> float:
    c = CORNER
    squares = [image[:c, :c], image[:c, -c:], image[-c:, :c], image[-c:, -c:]]  # TL, TR, BL, BR
    spread = []
    for sq in squares:
        px = sq.reshape(-1, 3).astype(np.float64)
        spread.append(np.percentile(np.linalg.norm(px - np.median(px, axis=0), axis=1), 98))
    return float(spread[3] / max(4.0, np.mean(spread[:3])))


def corners_free(sample) -> bool:
    taken = np.zeros(sample.image.shape[:2], bool)
    for o in sample.objects:
        taken |= o.mask
    c = CORNER
    return not any(taken[ys, xs].any() for ys in (slice(0, c), slice(-c, None)) for xs in (slice(0, c), slice(-c, None)))


def run(backend: LocalBackend, req: GenerationRequest) -> tuple[np.ndarray, np.ndarray]:
    """(the picture, its final x0 through the linear map at full size)."""
    events: list = []
    backend.run(1, req, events.append, threading.Event())
    final = [e for e in events if isinstance(e, Finished)][0].image
    x0 = [e for e in events if isinstance(e, Preview)][-1].image
    return final, np.repeat(np.repeat(x0, final.shape[0] // x0.shape[0], 0), final.shape[1] // x0.shape[1], 1)


def held_out_samples(n: int) -> list:
    """n held-out world scenes whose shapes touch no corner square."""
    rng = np.random.default_rng(SEED)
    samples = []
    while len(samples) < n:
        s = generate(rng, 128, "shapes")
        if corners_free(s):
            samples.append(s)
    return samples


def generated_ratios(backend: LocalBackend, samples: list, steps: int, model: str) -> tuple[list[float], list[float]]:
    """The figure of each sample's picture through the scribble ControlNet, and of its final x0 (no decoder)."""
    pictures, latents = [], []
    for i, s in enumerate(samples):
        req = GenerationRequest(s.caption, controls=(ControlSpec("scribble", s.control("scribble")),), steps=steps,
                                seed=i, model=model)  # fmt: skip
        final, x0 = run(backend, req)
        pictures.append(ring_ratio(final))
        latents.append(ring_ratio(x0))
    return pictures, latents


def vae_ratios(model: str, samples: list) -> list[float]:
    from noisebrush.engine.decode_margin import vae_with_margin
    from noisebrush.engine.models import resolve_model_dir
    from training.common import to_tensor

    vae = vae_with_margin(resolve_model_dir(model) / "vae")
    with torch.no_grad():
        x = to_tensor(np.stack([s.image for s in samples]))
        rec = vae.decode(vae.encode(x).latent_dist.mode()).sample.clamp(-1, 1)
    images = ((rec + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    return [ring_ratio(i) for i in images]


def line(name: str, ratios: list[float]) -> None:
    print(f"{name}: {np.mean(ratios):.2f}  (median {np.median(ratios):.2f}, {len(ratios)} pictures)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="")
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--steps", default="20,4")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    samples = held_out_samples(args.n)
    backend = LocalBackend(preview_interval_s=1e9, quick_start=False)  # the last step's preview always comes
    print(f"model: {args.model or 'embedded'}; target ≤ 1.3 (1 = no ring)")
    for steps in (int(s) for s in args.steps.split(",")):
        pictures, latents = generated_ratios(backend, samples, steps, args.model)
        line(f"generated, {steps} steps", pictures)
        line(f"  its latents (x0 through the linear map, no VAE), {steps} steps", latents)
        plain, empty = [], []
        for i, colour in enumerate(list(PALETTE) * 2):
            req = GenerationRequest(f"a plain {colour} background", steps=steps, seed=i, model=args.model)
            plain.append(ring_ratio(run(backend, req)[0]))
            blank = np.zeros((128, 128, 3), np.uint8)
            empty.append(ring_ratio(run(backend, req.replace(controls=(ControlSpec("scribble", blank),)))[0]))
        line(f"  plain backgrounds, no control (UNet alone), {steps} steps", plain)
        line(f"  plain backgrounds, empty scribble (with the ControlNet), {steps} steps", empty)
    line("VAE alone: the world pictures encoded and decoded", vae_ratios(args.model, samples))


if __name__ == "__main__":
    main()
