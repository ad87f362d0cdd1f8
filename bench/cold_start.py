"""Cold start: how long until a person sees something, from a fresh process.

    python bench/cold_start.py [--runs 3]

Prints (medians of --runs fresh processes):
  CLI: `noisebrush generate` 4 steps at 128 px, process start → PNG written
  GUI: process start → window shown → first step preview of a Generate pressed at once → the full engine
       (diffusers, loaded in the background after the first frame) ready
  Imports: the heavy modules, each timed in a fresh process

The first frames run on the quick start (engine/quick_start.py), which needs torch alone.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

GUI_PROBE = r"""
import json, os, sys, time
t0 = float(os.environ["NB_T0"])
from PySide6.QtWidgets import QApplication
app = QApplication(sys.argv)
from noisebrush.gui.app import create_main_window
from PySide6.QtCore import QSettings
w = create_main_window(settings=QSettings(os.environ["NB_INI"], QSettings.Format.IniFormat),
                       data_dir=os.environ["NB_DATA"], restore="never")
w.show()
app.processEvents()
shown = time.time() - t0
heavy = sorted(m for m in ("torch", "diffusers", "transformers") if m in sys.modules)
stalls = []
def wait(cond, limit=300):
    end, last = time.time() + limit, time.time()
    while not cond() and time.time() < end:
        app.processEvents()
        now = time.time()
        stalls.append(now - last)  # the event loop's gaps: what a stroke would wait for
        last = now
        time.sleep(0.002)
previews = []
w.bridge.preview.connect(lambda *a: previews.append(time.time() - t0))
w.state.update(steps=4)
w.generate()
wait(lambda: previews)
runner = lambda: getattr(w.bridge.engine.backend, "_runner", None)
stalls.clear()
wait(lambda: runner() is not None and runner().models.is_loaded(""))
full = time.time() - t0
print(json.dumps({"shown": shown, "heavy_at_show": heavy, "preview": previews[0], "full": full,
                  "stall": max(stalls, default=0) - 0.002}))
w.close()
"""


def run_cli(tmp: Path) -> float:
    out = tmp / "cli.png"
    t0 = time.time()
    cmd = [sys.executable, "-m", "noisebrush", "generate", "--prompt", "a red circle on a blue background",
           "--steps", "4", "--out", str(out)]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT, env=os.environ | {"HF_HUB_OFFLINE": "1"})
    return time.time() - t0


def run_gui(tmp: Path) -> dict:
    env = os.environ | {"HF_HUB_OFFLINE": "1", "QT_QPA_PLATFORM": os.environ.get("QT_QPA_PLATFORM", "offscreen"),
                        "NB_INI": str(tmp / "s.ini"), "NB_DATA": str(tmp / "data"), "NB_T0": repr(time.time())}  # fmt: skip
    out = subprocess.run([sys.executable, "-c", GUI_PROBE], check=True, capture_output=True, text=True, cwd=ROOT, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


IMPORTS = {
    "torch": "import torch",
    "diffusers (UNet, pipelines)": "from diffusers import UNet2DConditionModel, StableDiffusionControlNetPipeline",
    "transformers (BertModel)": "from transformers import BertModel",
    "tokenizers": "import tokenizers",
    "the quick start": "import noisebrush.engine.quick_start",
}


def import_time(statement: str) -> float:
    code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=ROOT)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        cli = [run_cli(tmp) for _ in range(args.runs)]
        gui = [run_gui(tmp) for _ in range(args.runs)]
    med = lambda key: statistics.median(g[key] for g in gui)  # noqa: E731
    print(f"CLI generate, 4 steps at 128 px: {statistics.median(cli):.2f} s (process start to PNG)")
    print(f"GUI window shown: {med('shown'):.2f} s   (torch/diffusers/transformers imported by then: "
          f"{', '.join(gui[0]['heavy_at_show']) or 'none'})")  # fmt: skip
    print(f"GUI first step preview of a 4-step generation: {med('preview'):.2f} s")
    print(
        f"GUI full engine ready (diffusers, in the background): {med('full'):.2f} s; the event loop's longest "
        f"gap meanwhile {1000 * med('stall'):.0f} ms"
    )
    for name, statement in IMPORTS.items():  # each alone in a fresh process (torch included in the others)
        times = [import_time(statement) for _ in range(args.runs)]
        print(f"import {name}: {statistics.median(times):.2f} s")


if __name__ == "__main__":
    main()
