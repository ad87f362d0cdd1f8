"""A live-mode storm: many latest-wins requests from several threads, a listener that raises, then shutdown.

    python bench/live_storm.py [--requests 1000] [--threads 4] [--steps 4]

Runs the real engine on the embedded model and prints: jobs finished and cancelled (a storm should finish only a
few: every new request supersedes the running one), threads before and after, memory growth (RSS), and how long
the engine took to drain after the last request.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from noisebrush.engine.engine import Engine  # noqa: E402
from noisebrush.engine.events import Cancelled, Failed, Finished  # noqa: E402
from noisebrush.engine.request import ControlSpec, GenerationRequest  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--steps", type=int, default=4)
    args = ap.parse_args()
    ends: dict[type, int] = {Finished: 0, Cancelled: 0, Failed: 0}
    lock = threading.Lock()
    last_end = [0.0]

    def count(ev) -> None:
        if type(ev) in ends:
            with lock:
                ends[type(ev)] += 1
                last_end[0] = time.perf_counter()

    def rude(ev) -> None:
        raise RuntimeError("a listener that always raises")

    threads_before = threading.active_count()
    engine = Engine(preview_interval_s=0.0)
    engine.add_listener(count)
    engine.add_listener(rude)
    sketch = np.zeros((128, 128, 3), np.uint8)
    warm = engine.submit(GenerationRequest("warm up", steps=1))  # load the model before measuring memory
    while ends[Finished] + ends[Failed] < 1:
        time.sleep(0.05)
    del warm
    rss0 = rss_mb()
    per_thread = args.requests // args.threads

    def storm(t: int) -> None:
        for i in range(per_thread):
            s = sketch.copy()
            s[(i * 7) % 128, :] = 255  # every request differs, as strokes do
            req = GenerationRequest("a red circle on a blue background", controls=(ControlSpec("scribble", s),),
                                    steps=args.steps, seed=t * 100_000 + i)  # fmt: skip
            engine.submit(req, latest_wins=True)

    t0 = time.perf_counter()
    workers = [threading.Thread(target=storm, args=(t,)) for t in range(args.threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    sent = time.perf_counter()
    submitted = per_thread * args.threads
    while sum(ends.values()) - 1 < submitted and time.perf_counter() - sent < 300:
        time.sleep(0.05)
    drained = last_end[0] - sent
    alive = engine.shutdown(30)
    time.sleep(0.2)
    print(f"requests: {submitted} from {args.threads} threads in {sent - t0:.2f} s (a listener raising on every event)")
    print(f"finished: {ends[Finished] - 1}   cancelled: {ends[Cancelled]}   failed: {ends[Failed]}")
    print(f"drain after the last request: {drained:.2f} s")
    print(f"memory growth during the storm: {rss_mb() - rss0:+.1f} MB")
    names = sorted(t.name for t in threading.enumerate() if t is not threading.main_thread())
    print(f"threads: {threads_before} before, {threading.active_count()} after (engine stopped: {alive}; others: {names})")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
