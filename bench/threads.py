"""Torch CPU threads: seconds a step with 1 thread and with every core, at the sizes people use.

    python bench/threads.py [--sizes 128,256,512] [--steps 12] [--model REF]

Each size runs in a fresh process per thread count (torch's pool is set once per process), after one warm-up
generation; the time of a step is the median over the steps (the spacing of the step previews, each with its
cheap x0 decode). The default model is the embedded one (a small SD1.5-shaped UNet with MiniLM). Prints one line
per size and a ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

PROBE = r"""
import json, sys, time
import numpy as np
from noisebrush.engine.engine import Engine
from noisebrush.engine.events import Finished, Preview
from noisebrush.engine.request import ControlSpec, GenerationRequest
threads, size, steps, model = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
sketch = np.zeros((size, size, 3), np.uint8); sketch[size // 4 : 3 * size // 4, size // 2 - 2 : size // 2 + 2] = 255
eng = Engine(threads=threads, preview_interval_s=0.0)
stamps, done = [], []
def listen(ev):
    if isinstance(ev, Preview):
        stamps.append(time.perf_counter())
    elif type(ev).__name__ in ("Finished", "Failed", "Cancelled"):
        done.append(ev)
eng.add_listener(listen)
req = GenerationRequest("a red circle on a blue background", controls=(ControlSpec("scribble", sketch),), steps=steps,
                        seed=1, width=size, height=size, model=model)
for _ in range(2):  # a warm-up, then the timed one
    stamps.clear(); done.clear()
    eng.submit(req)
    while not done:
        time.sleep(0.01)
assert isinstance(done[0], Finished), done[0]
gaps = [b - a for a, b in zip(stamps, stamps[1:])]
print(json.dumps({"step_s": sorted(gaps)[len(gaps) // 2]}))
eng.shutdown(30)
"""


def step_time(threads: int, size: int, steps: int, model: str) -> float:
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", PROBE, str(threads), str(size), str(steps), model], env=env,
                         check=True, capture_output=True, text=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])["step_s"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="128,256,512")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--model", default="", help="a model reference (default: the embedded model)")
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    print(f"{cores} cores; torch threads 1 against {cores}; {args.steps} steps, median step time")
    for size in (int(s) for s in args.sizes.split(",")):
        one = statistics.median(step_time(1, size, args.steps, args.model) for _ in range(2))
        every = statistics.median(step_time(cores, size, args.steps, args.model) for _ in range(2))
        print(f"{size:5d} px: 1 thread {one:.3f} s/step, {cores} threads {every:.3f} s/step ({one / every:.2f}× faster)")


if __name__ == "__main__":
    main()
