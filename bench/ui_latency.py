"""How responsive the app stays while the engine works.

    python bench/ui_latency.py [--model FOLDER] [--steps 20] [--debounce 150] [--big 4096]

Runs the real window (offscreen unless a display is set) wired to the real engine, and prints:
  max event-loop gap: N ms                 (target < 33 ms)
  stroke end → first preview: N ms          (target ≤ debounce + one step + 30 ms)
  preview frames shown per second: N
  on a 4096² document: longest stall of a brush stroke: N ms (target < 33 ms), and its memory (RSS)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QElapsedTimer, QPoint, QSettings, Qt, QTimer  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--debounce", type=int, default=150)
    ap.add_argument("--big", type=int, default=4096, help="the side of the large document to paint on (0: skip)")
    args = ap.parse_args()
    app = QApplication(sys.argv)
    from noisebrush.gui.app import create_main_window

    tmp = Path(tempfile.mkdtemp())
    w = create_main_window(model=args.model, settings=QSettings(str(tmp / "s.ini"), QSettings.Format.IniFormat), data_dir=tmp,
                           live_debounce_ms=args.debounce, restore="never")  # fmt: skip
    w.resize(1280, 860)
    w.show()
    w.panel.steps.setValue(args.steps)
    clock = QElapsedTimer()
    clock.start()
    gaps: list[float] = []
    last = [clock.nsecsElapsed()]
    measuring = [False]

    def tick() -> None:
        now = clock.nsecsElapsed()
        if measuring[0]:
            gaps.append((now - last[0]) / 1e6)
        last[0] = now

    ticker = QTimer()
    ticker.setInterval(1)
    ticker.timeout.connect(tick)
    ticker.start()

    shown: list[tuple[int, float]] = []  # (job, time) of previews the window painted
    w.bridge.preview.connect(lambda job, *_: job == w.job and shown.append((job, time.perf_counter())))
    results: dict = {}

    def wait_for(cond, timeout=300.0) -> None:
        end = time.perf_counter() + timeout
        while not cond() and time.perf_counter() < end:
            app.processEvents()
            time.sleep(0.0005)

    # warm up: load the model and run once
    wait_for(lambda: not w.bridge.engine.busy)
    job = w.generate()
    wait_for(lambda: w.job is None)

    # 1. event-loop gaps and frame rate during a generation
    shown.clear()
    measuring[0] = True
    t0 = time.perf_counter()
    w.generate()
    wait_for(lambda: w.job is None)
    run_s = time.perf_counter() - t0
    measuring[0] = False
    results["gap"] = max(gaps) if gaps else 0.0
    results["fps"] = len(shown) / run_s
    step_s = run_s / args.steps

    # 2. live mode: stroke end → first preview on the canvas
    w.panel.live.setChecked(True)
    wait_for(lambda: w.job is None and not w.jobs.live.timer.isActive())
    latencies = []
    for i in range(5):
        shown.clear()
        c = w.canvas
        r = c.doc_rect_on_screen()
        y = int(r.top() + r.height() * (0.2 + 0.15 * i))
        QTest.mousePress(c, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, QPoint(int(r.left() + 40), y))
        QTest.mouseMove(c, QPoint(int(r.right() - 40), y))
        QTest.mouseRelease(c, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, QPoint(int(r.right() - 40), y))
        t_end = time.perf_counter()
        wait_for(lambda: bool(shown))
        latencies.append((shown[0][1] - t_end) * 1000)
        wait_for(lambda: w.job is None)
    w.panel.live.setChecked(False)
    big = big_document(w, app, args.big) if args.big else None
    w.close()
    latencies.sort()
    print(f"model: {args.model or 'embedded default'}  steps: {args.steps}  one step: {step_s * 1000:.0f} ms  torch threads: "
          f"{__import__('torch').get_num_threads()}")  # fmt: skip
    print(f"max event-loop gap: {results['gap']:.1f} ms (during a {args.steps}-step generation)")
    print(f"stroke end → first preview: {latencies[len(latencies) // 2]:.0f} ms median, {latencies[-1]:.0f} ms worst "
          f"(target ≤ {args.debounce} + {step_s * 1000:.0f} + 30 = {args.debounce + step_s * 1000 + 30:.0f} ms)")  # fmt: skip
    print(f"preview frames shown per second: {results['fps']:.1f}")
    if big:
        print(f"on a {args.big}² document: longest stall of a brush stroke {big['stall']:.1f} ms (median event "
              f"{big['median']:.1f} ms; target < 33 ms); RSS {big['rss_small']:.0f} MB at 128 px → {big['rss']:.0f} MB "
              f"with its {big['layers']} layers, {big['rss_strokes']:.0f} MB after 20 strokes with their undo")  # fmt: skip
    del job


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def big_document(w, app, side: int) -> dict:
    """Brush strokes on a side² document: how long the GUI thread is busy per input event and per repaint."""
    small = rss_mb()
    w.state.update(width=side, height=side)
    app.processEvents()
    after_resize = rss_mb()
    w.layers_panel.set_active("scribble")
    w.brush_size_box.setValue(24)
    c = w.canvas
    c.zoom(4.0)  # zoomed in, as one paints details on a large picture
    app.processEvents()
    stalls: list[float] = []

    def timed(fn) -> None:
        t = time.perf_counter()
        fn()
        app.processEvents()  # the repaint of what the event changed
        stalls.append((time.perf_counter() - t) * 1000)

    r = c.rect()
    for i in range(20):
        y = int(r.height() * (0.1 + 0.04 * i))
        points = [QPoint(int(r.width() * (0.1 + 0.04 * k)), y) for k in range(21)]
        first, last = points[0], points[-1]
        timed(lambda a=first: QTest.mousePress(c, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, a))
        for p in points[1:]:
            timed(lambda p=p: QTest.mouseMove(c, p))
        timed(lambda b=last: QTest.mouseRelease(c, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, b))
    stalls.sort()
    return {"stall": stalls[-1], "median": stalls[len(stalls) // 2], "rss_small": small, "rss": after_resize,
            "rss_strokes": rss_mb(), "layers": len(w.doc.all_layers())}  # fmt: skip


if __name__ == "__main__":
    main()
