"""How responsive the app stays while the engine works.

    python bench/ui_latency.py [--model FOLDER] [--steps 20] [--debounce 150]

Runs the real window (offscreen unless a display is set) wired to the real engine, and prints:
  max event-loop gap: N ms                 (target < 33 ms)
  stroke end → first preview: N ms          (target ≤ debounce + one step + 30 ms)
  preview frames shown per second: N
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
    w.bridge.preview.connect(lambda job, step, total, img, el: job == w.job and shown.append((job, time.perf_counter())))
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
    w.close()
    latencies.sort()
    print(f"model: {args.model or 'embedded default'}  steps: {args.steps}  one step: {step_s * 1000:.0f} ms  torch threads: "
          f"{__import__('torch').get_num_threads()}")  # fmt: skip
    print(f"max event-loop gap: {results['gap']:.1f} ms (during a {args.steps}-step generation)")
    print(f"stroke end → first preview: {latencies[len(latencies) // 2]:.0f} ms median, {latencies[-1]:.0f} ms worst "
          f"(target ≤ {args.debounce} + {step_s * 1000:.0f} + 30 = {args.debounce + step_s * 1000 + 30:.0f} ms)")  # fmt: skip
    print(f"preview frames shown per second: {results['fps']:.1f}")
    del job


if __name__ == "__main__":
    main()
