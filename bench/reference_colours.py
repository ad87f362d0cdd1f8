"""Do results follow a reference's colours? The embedded model with its own reference adapter (training/train_reference.py).

    python bench/reference_colours.py [--seeds 4] [--steps 12] [--adapter FILE] [--held-out purple,orange]

For each of the world's ten colours, a reference picture in that colour (a field of it with a white square, and
the reverse), a prompt that names no colour, and four seeds: the share of the result's pixels whose nearest palette
colour is the reference's, with the reference (Both, Style) and without. `--held-out` names the colours the adapter
was trained without (training/train_reference.py --hold-out), reported apart; landscapes are held out of every
adapter's training, and the last lines use landscape references.
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from noisebrush.engine.composition import Reference  # noqa: E402
from noisebrush.engine.events import Finished  # noqa: E402
from noisebrush.engine.request import GenerationRequest  # noqa: E402
from training.world import PALETTE, generate  # noqa: E402

PROMPTS = ("a circle", "a shape on a background", "a star")


def share(image: np.ndarray, colour: str) -> float:
    names = list(PALETTE)
    pal = np.array([PALETTE[n] for n in names], np.float32)
    nearest = ((image.reshape(-1, 1, 3).astype(np.float32) - pal[None]) ** 2).sum(-1).argmin(1)
    return float((nearest == names.index(colour)).mean())


def references(colour: str) -> list[np.ndarray]:
    field = np.zeros((128, 128, 3), np.uint8)
    field[:] = PALETTE[colour]
    field[40:88, 40:88] = PALETTE["white"] if colour != "white" else PALETTE["black"]
    square = np.full((128, 128, 3), 245, np.uint8) if colour != "white" else np.full((128, 128, 3), 25, np.uint8)
    square[32:96, 32:96] = PALETTE[colour]
    return [field, square]


def main() -> None:
    from noisebrush.engine.device import LoadOptions, choose
    from noisebrush.engine.models import ModelManager
    from noisebrush.engine.runner import Runner

    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--adapter", default="")
    p.add_argument("--held-out", default="", help="colours the adapter never saw in training, comma-separated")
    args = p.parse_args()
    held_out = tuple(c for c in args.held_out.split(",") if c)
    options = LoadOptions()
    runner = Runner(ModelManager(choose(options), options), previews=False)

    def run(req: GenerationRequest) -> np.ndarray:
        events: list = []
        runner.run(1, req, events.append, threading.Event())
        return next(e for e in events if isinstance(e, Finished)).image

    rows = []
    print(f"{'colour':8} {'held out':8} {'none':>6} {'both':>6} {'style':>6}")
    for colour in PALETTE:
        got = {"none": [], "both": [], "style": []}
        for seed in range(args.seeds):
            for prompt in PROMPTS[: 1 + seed % len(PROMPTS)][-1:]:
                base = GenerationRequest(prompt, steps=args.steps, seed=seed)
                got["none"].append(share(run(base), colour))
                for ref in references(colour):
                    for mode in ("both", "style"):
                        req = base.replace(references=(Reference(ref, 1.0, mode, adapter=args.adapter),))
                        got[mode].append(share(run(req), colour))
        means = {k: float(np.mean(v)) for k, v in got.items()}
        rows.append((colour, colour in held_out, means))
        print(f"{colour:8} {'yes' if colour in held_out else '':8} {means['none']:6.3f} {means['both']:6.3f} "
              f"{means['style']:6.3f}", flush=True)  # fmt: skip
    for label, held in (("trained colours", False), ("held-out colours", True)):
        sel = [m for _c, h, m in rows if h == held]
        if not sel:
            continue
        print(f"{label}: share of the reference's colour, none {np.mean([m['none'] for m in sel]):.3f} → both "
              f"{np.mean([m['both'] for m in sel]):.3f}, style {np.mean([m['style'] for m in sel]):.3f}")  # fmt: skip
    rng = np.random.default_rng(7)  # landscapes: a scene type the adapter never saw
    lifts = []
    for seed in range(args.seeds):
        scene = generate(rng, 128, "landscape")
        colour = max(PALETTE, key=lambda c: share(scene.image, c))
        base = GenerationRequest("a picture", steps=args.steps, seed=seed)
        plain = share(run(base), colour)
        both = share(run(base.replace(references=(Reference(scene.image, 1.0, "both", adapter=args.adapter),))), colour)
        lifts.append((colour, plain, both))
        print(f"landscape reference {seed} (mostly {colour}): share {plain:.3f} → {both:.3f}", flush=True)


if __name__ == "__main__":
    main()
