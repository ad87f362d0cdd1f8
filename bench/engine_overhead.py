"""Engine overhead against a bare diffusers call, preview cost, and cancel latency.

    python bench/engine_overhead.py [--model FOLDER] [--steps 20] [--size 128] [--runs 3]

Prints:
  engine/bare ratio: X.XX          (target ≤ 1.03)
  preview cost per step: X.X %     (target ≤ 2 %)
  cancel latency: N step(s)        (target ≤ 1)
"""

from __future__ import annotations

import argparse
import queue
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from noisebrush.engine.device import pick_device  # noqa: E402
from noisebrush.engine.engine import Engine  # noqa: E402
from noisebrush.engine.events import Cancelled, Finished, Preview  # noqa: E402
from noisebrush.engine.models import load_base  # noqa: E402
from noisebrush.engine.request import ControlSpec, GenerationRequest  # noqa: E402
from noisebrush.engine.schedulers import make_scheduler  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sketch = np.zeros((args.size, args.size, 3), np.uint8)
    cv2.circle(sketch, (args.size // 2, args.size // 2), args.size // 3, (255, 255, 255), 2)
    req = GenerationRequest("a red circle on a blue background", controls=(ControlSpec("scribble", sketch),),
                            steps=args.steps, seed=1, width=args.size, height=args.size, model=args.model)  # fmt: skip

    # (b) bare diffusers: the same components, no callback, no previews
    model = load_base(args.model, pick_device())
    net = model.controlnet("scribble")

    def bare() -> float:
        pipe = model.pipeline([net], "txt2img", scheduler=make_scheduler(req.scheduler, model.components["scheduler"].config))
        t0 = time.perf_counter()
        pipe(prompt=req.prompt, image=Image.fromarray(sketch), num_inference_steps=req.steps, guidance_scale=req.guidance,
             width=req.width, height=req.height, generator=torch.Generator().manual_seed(1), output_type="np")  # fmt: skip
        return time.perf_counter() - t0

    # (a) the engine, previews on at every step
    events: queue.Queue = queue.Queue()
    engine = Engine(preview_interval_s=0.0, threads=args.threads or torch.get_num_threads())
    engine.add_listener(events.put)

    def through_engine() -> tuple[float, int]:
        t0 = time.perf_counter()
        job = engine.submit(req)
        previews = 0
        while True:
            ev = events.get(timeout=600)
            if isinstance(ev, Preview) and ev.job_id == job:
                previews += 1
            if isinstance(ev, Finished) and ev.job_id == job:
                return time.perf_counter() - t0, previews

    through_engine()  # warm-up: loads the engine's own copy of the model
    bare()
    bare_times, engine_times = [], []
    for _ in range(args.runs):  # interleaved, so drift in machine load hits both alike
        bare_times.append(bare())
        t, n_prev = through_engine()
        engine_times.append(t)
    b, e = statistics.median(bare_times), statistics.median(engine_times)

    # preview cost: x0 decode for one step against one step's time
    lat = torch.randn(1, 4, args.size // 8, args.size // 8)
    t0 = time.perf_counter()
    for _ in range(200):
        model.preview.decode(lat)
    decode_s = (time.perf_counter() - t0) / 200
    step_s = b / args.steps

    # cancel latency: cancel from a listener right after step 3's preview
    state: dict = {}

    def cancel_at_3(ev) -> None:
        if isinstance(ev, Preview) and ev.job_id == state.get("job") and ev.step == 3:
            engine.cancel(ev.job_id)

    engine.add_listener(cancel_at_3)
    state["job"] = engine.submit(req.replace(steps=max(10, args.steps)))
    while True:
        ev = events.get(timeout=600)
        if isinstance(ev, Cancelled) and ev.job_id == state["job"]:
            latency = ev.at_step - 3
            break
    engine.shutdown()

    print(
        f"model: {model.name}  size: {args.size}  steps: {args.steps}  "
        f"threads: {torch.get_num_threads()}  device: {model.device.device}"
    )
    print(f"bare diffusers: {b:.3f} s   engine end to end: {e:.3f} s   previews emitted: {n_prev}")
    print(f"engine/bare ratio: {e / b:.2f}")
    print(f"preview cost per step: {100 * decode_s / step_s:.2f} % ({decode_s * 1000:.2f} ms of {step_s * 1000:.1f} ms)")
    print(f"cancel latency: {latency} step(s)")


if __name__ == "__main__":
    main()
