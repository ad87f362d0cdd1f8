"""A model's few-step path (engine/few_step.py): at its step count or fewer, LCM, no CFG and its LoRA if it has one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import circle_sketch, logged_engine
from test_loras import write_tiny_lora

from noisebrush.engine.events import Finished
from noisebrush.engine.few_step import FewStep, read_few_step
from noisebrush.engine.models import model_defaults
from noisebrush.engine.request import ControlSpec, GenerationRequest, LoraSpec


@pytest.fixture(scope="module")
def few_step_model(tiny_model, tmp_path_factory) -> str:
    """The tiny model with a few-step block and a LoRA in its folder, as the embedded model ships them."""
    folder = tmp_path_factory.mktemp("few") / "tiny-few"
    shutil.copytree(tiny_model, folder)
    write_tiny_lora(folder / "fewstep", seed=5)
    meta = json.loads((folder / "noisebrush.json").read_text())
    meta["few_step"] = {"steps": 4, "lora": "fewstep/pytorch_lora_weights.safetensors", "scheduler": "LCM", "guidance": 1}
    (folder / "noisebrush.json").write_text(json.dumps(meta))
    return str(folder)


def request(model: str, steps: int, **kw) -> GenerationRequest:
    return GenerationRequest("a red circle", controls=(ControlSpec("scribble", circle_sketch()),), steps=steps, seed=3,
                             width=64, height=64, model=model, guidance=5.0, scheduler="DPM++ 2M", **kw)  # fmt: skip


def test_four_steps_take_the_distilled_path_and_more_steps_the_full_one(tiny_model, few_step_model):
    lora = str(Path(few_step_model) / "fewstep" / "pytorch_lora_weights.safetensors")
    with logged_engine() as eng:
        run = lambda req: eng.log.wait_end(eng.submit(req))  # noqa: E731
        few = run(request(few_step_model, 4))
        assert isinstance(few, Finished)
        # exactly LCM, guidance 1 and the LoRA at weight 1, which the plain model gives when asked for them by hand
        by_hand = run(request(tiny_model, 4, loras=(LoraSpec(lora, 1.0),)).replace(scheduler="LCM", guidance=1.0))
        assert np.array_equal(few.image, by_hand.image)
        assert np.abs(few.image.astype(int) - run(request(tiny_model, 4)).image).mean() > 1  # not the full path
        # the request is kept as the person set it: its steps say which path ran, and it reopens onto the same one
        assert (few.params.steps, few.params.scheduler, few.params.guidance, few.params.loras) == (4, "DPM++ 2M", 5.0, ())
        assert np.array_equal(run(few.params).image, few.image)
        # five steps: the full path, untouched by the LoRA (switched off again) and with the person's sampler and CFG
        assert np.array_equal(run(request(few_step_model, 5)).image, run(request(tiny_model, 5)).image)
        assert np.array_equal(run(request(few_step_model, 2)).image, run(request(few_step_model, 2)).image)


def test_the_cli_takes_the_few_step_path_from_steps_alone(few_step_model, tiny_model, tmp_path):
    from PIL import Image

    from noisebrush.cli import main

    Image.fromarray(circle_sketch()).save(tmp_path / "s.png")
    outs = []
    for model in (few_step_model, tiny_model):
        out = tmp_path / f"{Path(model).name}.png"
        args = ["generate", "--prompt", "a red circle", "--model", model, "--steps", "4", "--seed", "3", "--width", "64",
                "--height", "64", "--control", f"scribble={tmp_path / 's.png'}", "--out", str(out)]  # fmt: skip
        assert main(args) == 0
        outs.append(np.asarray(Image.open(out).convert("RGB")).astype(int))
    assert np.abs(outs[0] - outs[1]).mean() > 1


def test_a_few_step_block_is_read_only_when_it_is_whole_and_its_lora_is_inside_the_folder(tmp_path, few_step_model):
    folder = Path(few_step_model)
    found = model_defaults(few_step_model).few_step
    assert found == FewStep(4, str((folder / "fewstep" / "pytorch_lora_weights.safetensors").resolve()), "LCM", 1.0)
    assert model_defaults("").few_step == FewStep(4, None, "LCM", 1.0)  # the embedded model's: no LoRA
    assert read_few_step(folder, {"few_step": {"steps": 2}}) == FewStep(2)
    (tmp_path / "x.safetensors").write_bytes(b"")
    for block in ({"steps": "many", "lora": "fewstep/pytorch_lora_weights.safetensors"}, {"lora": "x"}, [],
                  {"steps": 4, "lora": "missing.safetensors"}, {"steps": 4, "lora": "../x.safetensors"},
                  {"steps": 0, "lora": "fewstep/pytorch_lora_weights.safetensors"}):  # fmt: skip
        assert read_few_step(folder, {"few_step": block}) is None, block


def test_live_frames_take_the_few_steps_and_generate_the_slider(fake_window, few_step_model):
    state = fake_window.state
    state.update("user", model=few_step_model, steps=20)
    assert state.capture_request(live_frame=True).steps == 4
    assert state.capture_request().steps == 20
    state.update("user", steps=3)  # fewer on the slider: live frames take those
    assert state.capture_request(live_frame=True).steps == 3
    state.update("user", model="", steps=20)
    assert state.capture_request(live_frame=True).steps == 4  # the embedded model's few steps
    assert fake_window.panel.live.text() == "Live (4 steps)"
