"""A live-mode storm: many latest-wins requests from several threads, a listener that raises, then shutdown.

    python bench/live_storm.py [--requests 1000] [--threads 4] [--steps 4] [--servers 2]

Runs the real engine on the embedded model (or, with --servers N, on N local ComfyUI servers started from the
vendored source as the tests start them) and prints: jobs finished and cancelled (a storm should finish only a
few: every new request supersedes the running one), threads before and after, memory growth (RSS), how long the
engine took to drain after the last request, and with servers whether any stale job was left running or queued.
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
    ap.add_argument("--servers", type=int, default=0, help="run on this many local ComfyUI servers instead")
    args = ap.parse_args()
    servers, backend, model, size = [], None, "", 128
    if args.servers:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        from comfy_server import CHECKPOINT, ComfyServer, prepare

        from noisebrush.engine.backends.comfy import ComfyBackend

        install = prepare()
        servers = [ComfyServer(*install, f"storm{i}") for i in range(args.servers)]
        for server in servers:
            server.wait_ready()
        backend, model, size = ComfyBackend([s.url for s in servers]), CHECKPOINT, 64
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
    engine = Engine(backend, preview_interval_s=0.0)
    engine.add_listener(count)
    engine.add_listener(rude)
    sketch = np.zeros((size, size, 3), np.uint8)
    # load the model before measuring memory
    warm = engine.submit(GenerationRequest("warm up", steps=1, model=model, width=size, height=size))
    while ends[Finished] + ends[Failed] < 1:
        time.sleep(0.05)
    del warm
    rss0 = rss_mb()
    per_thread = args.requests // args.threads

    def storm(t: int) -> None:
        for i in range(per_thread):
            s = sketch.copy()
            s[(i * 7) % size, :] = 255  # every request differs, as strokes do
            req = GenerationRequest("a red circle on a blue background", controls=(ControlSpec("scribble", s),),
                                    steps=args.steps, seed=t * 100_000 + i, model=model, width=size, height=size)  # fmt: skip
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
    stopped = time.perf_counter()
    for server in servers:  # an interrupt lands at the server's next step: wait for it, and say how long it took
        import json
        import urllib.request

        while True:
            with urllib.request.urlopen(server.url + "/queue", timeout=10) as r:
                queue = json.loads(r.read())
            busy = len(queue["queue_running"]) + len(queue["queue_pending"])
            if busy == 0 or time.perf_counter() - stopped > 30:
                break
            time.sleep(0.05)
        print(f"{server.url}: {busy} stale jobs left, idle {time.perf_counter() - stopped:.2f} s after the engine stopped")
        server.stop()


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
