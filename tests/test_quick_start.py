"""The quick start (engine/quick_start.py): the embedded model's first frames with torch alone, pixel for pixel the
Runner's, and the hand-over to the Runner once diffusers has loaded."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from helpers import circle_sketch

from noisebrush.engine.backends.base import Stopped
from noisebrush.engine.backends.local import LocalBackend
from noisebrush.engine.composition import Region
from noisebrush.engine.device import DeviceChoice, LoadOptions
from noisebrush.engine.events import Finished, Preview
from noisebrush.engine.quick_start import QuickRunner, quick_refusal
from noisebrush.engine.request import ControlSpec, GenerationRequest, LoraSpec

ROOT = Path(__file__).resolve().parent.parent
CPU = DeviceChoice("cpu", "float32")


def _run(runner, req: GenerationRequest) -> list:
    events: list = []
    runner.run(1, req, events.append, threading.Event())
    return events


@pytest.fixture(scope="module")
def runners():
    return QuickRunner(preview_interval_s=0.0), LocalBackend(preview_interval_s=0.0, quick_start=False)._get_runner()


SQUARE = np.zeros((96, 160, 3), np.uint8)
SQUARE[20:70, 40:120] = 255
TWO = ControlSpec("depth", SQUARE, 0.5)


@pytest.mark.parametrize(
    "req",
    [
        GenerationRequest("a red circle on a blue background", steps=4, seed=3),  # the few-step LCM path (live)
        GenerationRequest(
            "a red circle on a blue background",
            controls=(ControlSpec("scribble", circle_sketch(128)),),
            steps=8,
            seed=11,
            guidance=5.0,
        ),  # DPM++ 2M with CFG  # fmt: skip
        GenerationRequest(
            "a green square",
            negative_prompt="blue",
            steps=6,
            seed=9,
            guidance=3.0,
            width=160,
            height=96,
            controls=(ControlSpec("scribble", SQUARE, 0.8, 0.0, 0.6), TWO),
        ),  # fmt: skip
        GenerationRequest("a yellow star", steps=5, seed=1, width=136, height=72),  # latents not a multiple of 4
    ],
    ids=["lcm-4", "dpm-cfg-scribble", "two-controls-ending-early", "odd-size"],
)
def test_the_quick_start_paints_the_runners_pixels_and_previews(runners, req):
    quick, full = (_run(r, req) for r in runners)
    (a,), (b,) = ([e for e in events if isinstance(e, Finished)] for events in (quick, full))
    assert np.array_equal(a.image, b.image) and a.params == b.params and a.model_name == b.model_name
    pa, pb = ([e for e in events if isinstance(e, Preview)] for events in (quick, full))
    assert [p.step for p in pa] == [p.step for p in pb] == list(range(1, len(pb) + 1))
    assert all(np.array_equal(x.image, y.image) for x, y in zip(pa, pb))  # the same x0 each step


def test_the_quick_start_stops_within_a_step():
    quick, cancelled, events = QuickRunner(preview_interval_s=0.0), threading.Event(), []

    def emit(event):
        events.append(event)
        if isinstance(event, Preview):
            cancelled.set()

    with pytest.raises(Stopped) as stop:
        quick.run(1, GenerationRequest("a red circle", steps=12, seed=1), emit, cancelled)
    assert stop.value.steps_done == 2 and not any(isinstance(e, Finished) for e in events)


@pytest.mark.parametrize(
    "change, why",
    [
        (dict(model="some/other-model"), "another model"),
        (dict(scheduler="Euler a"), "sampler"),
        (dict(loras=(LoraSpec("x.safetensors"),)), "LoRAs"),
        (dict(regions=(Region(np.full((128, 128), 255, np.uint8), "a cat"),)), "regions"),
        (dict(init_image=np.zeros((128, 128, 3), np.uint8)), "text to image"),
        (dict(controls=(ControlSpec("canny", circle_sketch(128)),)), "ControlNet"),
    ],
)
def test_what_the_quick_start_leaves_to_the_runner(change, why):
    req = GenerationRequest("a red circle", **change)
    assert why in quick_refusal(req, CPU, LoadOptions())
    assert quick_refusal(GenerationRequest("a red circle"), DeviceChoice("cuda", "float16"), LoadOptions())
    assert quick_refusal(GenerationRequest("a red circle"), CPU, LoadOptions(attention_slicing=True))
    assert quick_refusal(GenerationRequest("a red circle"), CPU, LoadOptions()) is None


def test_the_backend_hands_over_to_the_runner_after_warming_up():
    backend = LocalBackend(preview_interval_s=0.0, warm_up=True)
    req = GenerationRequest("a red circle on a blue background", steps=4, seed=21)
    try:
        first = _run(backend, req)[-1]
        assert backend._quick is not None  # the first frame ran on the quick start
        backend._warming.join(120)
        assert backend._runner is not None and backend._runner.models.is_loaded("")
        again = _run(backend, req)[-1]
        assert backend._quick is None  # the Runner ran it, and the quick weights were let go
        assert isinstance(first, Finished) and np.array_equal(first.image, again.image)  # one seed, one picture
        euler = _run(backend, req.replace(steps=6, scheduler="Euler"))[-1]
        assert isinstance(euler, Finished) and euler.params.scheduler == "Euler"
    finally:
        backend.close()


def test_a_fresh_cli_generate_imports_neither_diffusers_nor_transformers(tmp_path):
    code = (
        "import sys\nfrom noisebrush.cli import main\n"
        f"main(['generate', '--prompt', 'a red circle', '--steps', '4', '--seed', '3', '--out', {str(tmp_path / 'a.png')!r}])\n"
        "print(sorted(m for m in ('diffusers', 'transformers', 'torch._dynamo') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300,
                         env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]" and (tmp_path / "a.png").is_file()
