"""Live mode on ordinary models: an accelerator LoRA (Hyper-SD, LCM-LoRA, Lightning) from the models folder goes
into live frames with its sampler, steps and guidance, never into Generate, and switching loads nothing."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from fake_backend import FakeBackend
from helpers import circle_sketch, logged_engine, open_window
from test_loras import write_tiny_lora

from noisebrush.engine.accelerators import accelerator_of
from noisebrush.engine.backends.base import ModelInfo
from noisebrush.engine.engine import Engine
from noisebrush.engine.events import Finished
from noisebrush.engine.request import ControlSpec, GenerationRequest, LoraSpec

DREAM = "/m/dream.safetensors"
HYPER = "/m/loras/Hyper-SD15-8steps-CFG-lora.safetensors"


@pytest.mark.parametrize("path, want", [
    ("Hyper-SD15-8steps-CFG-lora.safetensors", ("Hyper", 8, "Euler trailing", 3.5)),
    ("Hyper-SDXL-1step-lora.safetensors", ("Hyper", 1, "Euler trailing", 1.0)),
    ("lcm-lora-sdv1-5/pytorch_lora_weights.safetensors", ("LCM", 4, "LCM", 1.0)),
    ("sdxl_lightning_4step_lora.safetensors", ("Lightning", 4, "Euler trailing", 1.0)),
    ("watercolour_style_lora.safetensors", None),
    ("sdxl_lightning_4step_unet.safetensors", None),  # a Lightning checkpoint, not a LoRA
])  # fmt: skip
def test_accelerators_are_known_by_name_with_their_model_cards_settings(path, want):
    a = accelerator_of(path)
    assert (a and (a.name, a.steps, a.scheduler, a.guidance)) == want or (a is None and want is None)


@pytest.fixture
def window(qtbot, tmp_path):
    w = open_window(qtbot, tmp_path, Engine(FakeBackend(step_s=0.001)))
    yield w
    w.close()


def give_models(w, *loras: ModelInfo) -> None:
    w.state.set_models([ModelInfo("", "Embedded", "base", "sd15", control_kinds=("scribble", "depth", "pose")),
                        ModelInfo(DREAM, "Dream", "base", "sd15"), *loras])  # fmt: skip
    w.state.update(model=DREAM, steps=25, guidance=7.0, scheduler="DPM++ 2M")


def test_a_live_frame_carries_the_accelerator_and_generate_does_not(window):
    give_models(window, ModelInfo(HYPER, "hyper", "lora", "sd15"),
                ModelInfo("/m/loras/sdxl_lightning_8step_lora.safetensors", "xl", "lora", "sdxl"))  # fmt: skip
    live = window.state.capture_request(live_frame=True)
    assert [lo.path for lo in live.loras] == [HYPER] and live.loras[0].weight == 1.0
    assert (live.steps, live.scheduler, live.guidance) == (8, "Euler trailing", 3.5)
    full = window.state.capture_request()
    assert (full.loras, full.steps, full.scheduler, full.guidance) == ((), 25, "DPM++ 2M", 7.0)
    assert window.panel.live.text() == "Live · Hyper 8 steps"
    window.state.update(model="")  # the embedded model keeps its own few-step path
    assert window.state.capture_request(live_frame=True).loras == () and window.panel.live.text().startswith("Live (")


def test_with_no_accelerator_live_says_so_and_offers_the_pack(window, qtbot):
    give_models(window)
    assert window.panel.live.text() == "Live" and "accelerator LoRA" in window.panel.live.toolTip()
    window.state.update(live=True)
    qtbot.waitUntil(lambda: window.banner.isVisible(), timeout=3000)
    assert window.banner.action.text() == "Get the live LoRA…" and "all 25 steps" in window.banner.label.text()
    window.state.update(live=False)
    window.banner.action.click()
    assert [p.id for p in window.files._download_dialog.chosen()] == ["live-sd15"]
    window.files._download_dialog.reject()


def test_live_and_generate_switch_the_accelerator_without_loading_anything(tiny_model, tmp_path):
    folder = tmp_path / "lora"
    hyper = tmp_path / "Hyper-SD15-8steps-CFG-lora.safetensors"
    shutil.copy(write_tiny_lora(folder), hyper)
    base = GenerationRequest("a red circle", controls=(ControlSpec("scribble", circle_sketch()),), steps=3, seed=5,
                             width=64, height=64, model=tiny_model)  # fmt: skip
    live = base.replace(loras=(LoraSpec(str(hyper), 1.0),), steps=8, scheduler="Euler trailing", guidance=3.5)
    eng = logged_engine()
    try:
        run = lambda req: eng.log.wait_end(eng.submit(req))  # noqa: E731
        first = run(live)
        manager = eng.backend._runner.models
        model = manager.get(tiny_model)
        plain = run(base)
        again = run(live)
        assert all(isinstance(e, Finished) for e in (first, plain, again))
        assert manager.get(tiny_model) is model and list(model.loras) == [str(hyper)]  # loaded once, kept
        assert np.array_equal(first.image, again.image)  # the same frame again: the LoRA was switched back on
        assert np.abs(first.image.astype(int) - plain.image).mean() > 1  # and off for Generate
        assert again.params.scheduler == "Euler trailing" and plain.params.loras == ()
    finally:
        assert eng.shutdown(30)
