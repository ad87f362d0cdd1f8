"""Issue 30's GUI check: the three prompts painted in the real window, at 20 and 4 steps with a locked seed.

    xvfb-run -a -s "-screen 0 1366x768x24" python bench/gui_prompts.py [--model FOLDER] [--out DIR] [--seed 7]

Each prompt gets an outline sketch on the scribble layer and runs through Generate (4 steps takes the model's
few-step path, as live mode does). It prints, per picture, each shape's and the background's median colour, its
CIELAB ΔE2000 from the dictionary's colour, and the corner ring ratio (bench/corner_ring.py), and saves a screenshot
of the window. Then the same seed again (same pixels?) and save, close, reopen (same settings, same pixels?).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PySide6.QtCore import QEventLoop, QSettings, QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from bench.corner_ring import ring_ratio  # noqa: E402
from bench.model_vocab import regions  # noqa: E402
from noisebrush.gui.app import create_main_window  # noqa: E402
from training.colour_vocab import delta_e, load_vocab  # noqa: E402
from training.vocab_world import VocabSample  # noqa: E402
from training.world import WorldObject  # noqa: E402

SIZE = 128
# (prompt, [(colour word, shape, centre, radius)], background word)
CASES = [
    ("a crimson circle on a navy background", [("crimson", "circle", (64, 64), 34)], "navy"),
    ("a golden circle on a violet background", [("golden", "circle", (64, 64), 34)], "violet"),
    ("a lime circle and a coral square on a teal background",
     [("lime", "circle", (38, 64), 22), ("coral", "square", (90, 64), 22)], "teal"),
]  # fmt: skip


def case_sample(prompt: str, shapes: list, background: str) -> VocabSample:
    """The case as a bench sample: its outline sketch (white on black), its shapes' filled masks and colours."""
    sketch, objects = np.zeros((SIZE, SIZE, 3), np.uint8), []
    for word, kind, (x, y), r in shapes:
        m = np.zeros((SIZE, SIZE), np.uint8)
        if kind == "circle":
            cv2.circle(sketch, (x, y), r, (255, 255, 255), 2)
            cv2.circle(m, (x, y), r, 1, -1)
        else:
            cv2.rectangle(sketch, (x - r, y - r), (x + r, y + r), (255, 255, 255), 2)
            cv2.rectangle(m, (x - r, y - r), (x + r, y + r), 1, -1)
        objects.append(WorldObject(kind, word, m > 0, 0))
    blank, vocab = np.zeros_like(sketch), load_vocab()
    return VocabSample(image=blank, caption=prompt, scribble=sketch, depth=blank, pose=blank, background=background,
                       objects=objects, rgb={w: vocab.rgb(w) for w in (*(o.color for o in objects), background)})  # fmt: skip


def report(image: np.ndarray, sample: VocabSample) -> tuple[str, float]:
    """Each region's median colour and its ΔE2000 from the named colour (bench/model_vocab.py's regions)."""
    words, worst = [], 0.0
    for word, m in regions(sample):
        got = np.median(image[m], axis=0)
        de = float(delta_e(got, sample.rgb[word]))
        worst = max(worst, de)
        words.append(f"{word} {tuple(int(v) for v in got)} ΔE {de:.0f}")
    return "; ".join(words), worst


def wait_result(window, timeout_ms: int = 180_000) -> np.ndarray:
    """Generate, as the button does, and wait until the window has taken the result (its history, Save)."""
    loop, failed = QEventLoop(), []
    window.jobs.succeeded.connect(loop.quit)
    window.bridge.failed.connect(lambda _job, msg: (failed.append(msg), loop.quit()))
    QTimer.singleShot(timeout_ms, loop.quit)
    job = window.generate()
    loop.exec()
    window.jobs.succeeded.disconnect(loop.quit)
    window.bridge.failed.disconnect()
    ev = window.state.last_result
    if failed or ev is None or ev.job_id != job:
        raise SystemExit(f"no result: {failed}")
    return ev.image


def settle(ms: int = 300) -> None:
    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="")
    ap.add_argument("--out", default="gui-prompts")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _app = QApplication.instance() or QApplication(sys.argv)  # kept alive for the whole run
    tmp = Path(tempfile.mkdtemp())

    def window():
        settings = QSettings(str(tmp / "settings.ini"), QSettings.Format.IniFormat)
        w = create_main_window(model=args.model, settings=settings, data_dir=tmp / "data", restore="never")
        w.resize(1300, 740)
        w.show()
        settle(1500)
        return w

    w = window()
    results = {}
    for i, case in enumerate(CASES):
        sample = case_sample(*case)
        w.doc.set_layer_from_map("scribble", sample.scribble, None, "GUI check sketch")
        for steps in (20, 4):
            w.state.update(prompt=sample.caption, steps=steps, seed=args.seed, seed_locked=True)
            image = wait_result(w)
            results[(i, steps)] = image
            settle()
            w.grab().save(str(out / f"case{i}-{steps}steps.png"))
            text, worst = report(image, sample)
            ring = ring_ratio(image)
            print(f"{steps:2d} steps | {sample.caption} | {text} | worst ΔE {worst:.0f} | ring {ring:.2f}", flush=True)
    again = wait_result(w)  # the last case once more, same seed
    print("same seed twice, same pixels:", np.array_equal(again, results[(len(CASES) - 1, 4)]))
    saved = out / "saved.png"
    w.save_result(str(saved))
    w.close()
    w2 = window()
    w2.open_files([str(saved)])
    settle(1500)
    s = w2.state.settings
    print(f"reopened: prompt {s.prompt!r}, seed {s.seed} locked {s.seed_locked}, steps {s.steps}")
    print("reopened and generated, same pixels:", np.array_equal(wait_result(w2), again))
    w2.grab().save(str(out / "reopened.png"))
    w2.close()


if __name__ == "__main__":
    main()
