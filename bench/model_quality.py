"""Quality of the embedded model on held-out world cases (seeds never used in training).

    python bench/model_quality.py [--model FOLDER] [--n 100] [--steps 20] [--scheduler NAME] [--guidance 5] [--lora F]

Prints the edge F-score (scribble), colour accuracy, depth adherence, pose adherence,
guidance G vs 1, and the end-to-end speed of the same number of steps at 128 px through the engine (which takes
the model's few-step path by itself at 4 steps or fewer, as the app and CLI do).
"""

from __future__ import annotations

import argparse
import queue
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from noisebrush.engine.device import default_threads, pick_device  # noqa: E402
from noisebrush.engine.engine import Engine  # noqa: E402
from noisebrush.engine.events import Finished  # noqa: E402
from noisebrush.engine.loras import apply_loras  # noqa: E402
from noisebrush.engine.models import load_base  # noqa: E402
from noisebrush.engine.request import ControlSpec, GenerationRequest, LoraSpec  # noqa: E402
from noisebrush.engine.runner import encode_prompt  # noqa: E402
from noisebrush.engine.schedulers import make_scheduler  # noqa: E402
from training.metrics import color_checks, depth_fscore, limb_coverage, output_background, scribble_fscore  # noqa: E402
from training.world import generate  # noqa: E402

HELD_OUT_SEED = 990_001  # training uses seeds < 1000 (see training/configs)


class Generator:
    def __init__(self, ref: str, steps: int, scheduler: str = "DPM++ 2M", lora: str = "") -> None:
        self.model = load_base(ref, pick_device())
        self.steps = steps
        self.scheduler = scheduler
        self.loras = (LoraSpec(lora, 1.0),) if lora else ()  # a few-step LoRA to try before it ships

    def __call__(self, sample, kind: str | None, guidance: float = 5.0, seed: int = 0) -> np.ndarray:
        nets = [self.model.controlnet(kind)] if kind else []
        sched = make_scheduler(self.scheduler, self.model.components["scheduler"].config)
        pipe = self.model.pipeline(nets, "txt2img", scheduler=sched)
        apply_loras(pipe, self.model, self.loras)
        kw = {"image": Image.fromarray(sample.control(kind))} if kind else {}
        size = sample.image.shape[0]
        with torch.inference_mode():  # the app's own prompt encoding (with the model's colour words, where it has them)
            embeds = encode_prompt(pipe, self.model, sample.caption)
        out = pipe(**embeds, num_inference_steps=self.steps, guidance_scale=guidance, width=size, height=size,
                   generator=torch.Generator().manual_seed(seed), output_type="np", **kw).images[0]  # fmt: skip
        return (np.clip(out, 0, 1) * 255).round().astype(np.uint8)


def engine_speed(model: str, steps: int) -> float:
    """Seconds for one 128 px scribble picture through the whole engine path, as the app and CLI run it: the median
    of 5 after a first run that loads the model."""
    events: queue.Queue = queue.Queue()
    with Engine(previews=True, threads=default_threads()) as engine:  # the app's and CLI's thread budget
        engine.add_listener(events.put)
        s = generate(np.random.default_rng(1), 128, "shapes")
        scribble = (ControlSpec("scribble", s.scribble),)
        req = GenerationRequest(s.caption, controls=scribble, steps=steps, seed=0, width=128, height=128, model=model)
        times = []
        for _ in range(6):
            t = time.perf_counter()
            job = engine.submit(req)
            while not (isinstance(ev := events.get(timeout=300), Finished) and ev.job_id == job):
                pass
            times.append(time.perf_counter() - t)
    return statistics.median(times[1:])


def sampling_args(ap: argparse.ArgumentParser) -> None:
    """The options both model benches take: model, steps, sampler, guidance and a LoRA to try."""
    ap.add_argument("--model", default="")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--scheduler", default="DPM++ 2M")
    ap.add_argument("--guidance", type=float, default=5.0)
    ap.add_argument("--lora", default="", help="a LoRA at weight 1 (a few-step candidate: with --scheduler LCM --guidance 1)")


def main() -> None:
    ap = argparse.ArgumentParser()
    sampling_args(ap)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--save", help="write a contact sheet of the first cases here")
    args = ap.parse_args()
    gen = Generator(args.model, args.steps, args.scheduler, args.lora)
    g = args.guidance
    rng = np.random.default_rng(HELD_OUT_SEED)
    t0 = time.perf_counter()

    edge, colors5, colors1, strict5, depth, limbs = [], [], [], [], [], []
    sheet = []
    for i in range(args.n):
        s = generate(rng, 128, "shapes")
        out = gen(s, "scribble", g, seed=i)
        edge.append(scribble_fscore(out, s.scribble))
        colors5 += color_checks(out, s)
        strict5 += color_checks(out, s, strict=True)
        colors1 += color_checks(gen(s, "scribble", 1.0, seed=i), s)
        d = generate(rng, 128, "shapes")
        out_d = gen(d, "depth", g, seed=i)
        depth.append(depth_fscore(out_d, d.depth))
        f = generate(rng, 128, "figure")
        out_f = gen(f, "pose", g, seed=i)
        limbs += limb_coverage(out_f, f.people, output_background(out_f, f))
        if i < 8:
            sheet.append(np.concatenate([s.scribble, out, d.depth, out_d, f.pose, out_f], axis=1))
    quality_s = time.perf_counter() - t0

    speed = engine_speed(args.model, args.steps)

    if args.n == 0:  # speed only
        print(f"speed: {args.steps} steps at 128 px end to end: {speed:.2f} s (median of 5, {default_threads()} torch threads)")
        return
    print(
        f"cases: {args.n} per control kind (held-out seed {HELD_OUT_SEED}), {args.steps} steps, {args.scheduler}; "
        f"{quality_s:.0f} s"
    )
    print(f"edge F-score (scribble, 2 px): {np.mean(edge):.3f}   target >= 0.6")
    print(f"colour accuracy (guidance {g:g}): {np.mean(colors5):.3f} over {len(colors5)} checks   target >= 0.9")
    print(f"  strict (the colour the world painted, even where the caption leaves it open): {np.mean(strict5):.3f}")
    print(f"depth adherence F-score: {np.mean(depth):.3f}   target >= 0.5")
    print(f"pose adherence (limbs covered): {np.mean(limbs):.3f} over {len(limbs)} limbs   target >= 0.7")
    print(
        f"guidance works: colour accuracy {np.mean(colors5):.3f} at {g:g} vs {np.mean(colors1):.3f} at 1"
        f"   target: higher at {g:g}"
    )
    target = "0.3" if args.steps <= 4 else "2"
    print(
        f"speed: {args.steps} steps at 128 px end to end: {speed:.2f} s (median of 5, {default_threads()} torch threads)"
        f"   target <= {target} s"
    )
    if args.save and sheet:
        Image.fromarray(np.concatenate(sheet, axis=0)).save(args.save)
        print(f"contact sheet: {args.save} (scribble, output, depth, output, pose, output)")


if __name__ == "__main__":
    main()
