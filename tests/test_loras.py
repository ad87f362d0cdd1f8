"""LoRAs: loaded into the base model once, weighted per request, switched off when not asked for."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import circle_sketch, logged_engine

from noisebrush.engine.events import Failed, Finished
from noisebrush.engine.metadata import read_request, save_png
from noisebrush.engine.request import ControlSpec, GenerationRequest, LoraSpec


def write_tiny_lora(folder: Path, cross_attention_dim: int = 384, seed: int = 1) -> str:
    """A LoRA over the tiny UNet's attention, in diffusers' format, with weights large enough to show."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from helpers import add_random_lora
    from peft import get_peft_model_state_dict
    from tiny_model import tiny_unet

    unet = add_random_lora(tiny_unet(cross_attention_dim), seed, 2.0)
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    StableDiffusionPipeline.save_lora_weights(str(folder), unet_lora_layers=layers, safe_serialization=True)
    return str(folder / "pytorch_lora_weights.safetensors")


@pytest.fixture(scope="module")
def lora(tmp_path_factory) -> str:
    return write_tiny_lora(tmp_path_factory.mktemp("lora"))


def test_a_lora_changes_the_picture_by_its_weight_and_goes_when_not_asked_for(tiny_model, lora):
    base = GenerationRequest("a red circle", controls=(ControlSpec("scribble", circle_sketch()),), steps=3, seed=2,
                             width=64, height=64, model=tiny_model)  # fmt: skip
    with logged_engine() as eng:
        run = lambda req: eng.log.wait_end(eng.submit(req))  # noqa: E731
        plain = run(base).image
        strong = run(base.replace(loras=(LoraSpec(lora, 1.0),)))
        assert isinstance(strong, Finished) and np.abs(strong.image.astype(int) - plain).mean() > 1
        zero = run(base.replace(loras=(LoraSpec(lora, 0.0),))).image
        half = run(base.replace(loras=(LoraSpec(lora, 0.5),))).image
        assert np.abs(zero.astype(int) - plain).max() <= 1  # weight 0 is as if it were not there
        assert 0 < np.abs(half.astype(int) - plain).mean() < np.abs(strong.image.astype(int) - plain).mean()
        assert np.array_equal(run(base).image, plain)  # not asked for: switched off again
        assert np.array_equal(run(base.replace(loras=(LoraSpec(lora, 1.0),))).image, strong.image)  # reproducible


def test_a_lora_of_another_family_or_not_a_lora_is_a_clear_error(tiny_model, tmp_path):
    xl = write_tiny_lora(tmp_path / "xl", cross_attention_dim=2048)
    not_lora = tmp_path / "weights.safetensors"
    from safetensors.numpy import save_file

    save_file({"model.diffusion_model.x": np.zeros(4, np.float32)}, str(not_lora))
    with logged_engine() as eng:
        for path, says in ((xl, "does not fit"), (str(not_lora), "is not a LoRA"), (str(tmp_path / "a.ckpt"), "pickle")):
            if path.endswith(".ckpt"):
                Path(path).write_bytes(b"x")
            req = GenerationRequest("x", steps=1, width=64, height=64, model=tiny_model, loras=(LoraSpec(path, 1.0),))
            end = eng.log.wait_end(eng.submit(req))
            assert isinstance(end, Failed) and says in end.message, end


def test_loras_are_kept_in_the_png_and_named_for_a1111_tools(tmp_path, lora):
    from PIL import Image

    req = GenerationRequest("a cat", seed=1, loras=(LoraSpec(lora, 0.7),))
    path = save_png(np.zeros((128, 128, 3), np.uint8), req, tmp_path / "l.png")
    assert read_request(path).loras == (LoraSpec(lora, 0.7),)
    assert "a cat <lora:pytorch_lora_weights:0.7>" in Image.open(path).text["parameters"]


def test_cli_lora_flag_and_the_models_listing(tiny_model, lora, tmp_path, capsys):
    import shutil

    from noisebrush.cli import main

    out = tmp_path / "o.png"
    assert main(["generate", "--prompt", "x", "--model", tiny_model, "--steps", "2", "--width", "64", "--height", "64",
                 "--lora", f"{lora}@0.8", "--out", str(out)]) == 0  # fmt: skip
    assert read_request(out).loras == (LoraSpec(lora, 0.8),)
    shutil.copy(lora, tmp_path / "my-style.safetensors")
    assert main(["models", "--dir", str(tmp_path)]) == 0
    assert any("my-style.safetensors" in line and "lora" in line for line in capsys.readouterr().out.splitlines())


def test_a1111_lora_tags_in_the_prompt_become_the_requests_loras():
    from noisebrush.engine.errors import UserError
    from noisebrush.engine.prompt_loras import apply_tags, split_tags

    text, tags = split_tags("a cat, <lora:ink_style:0.6> in a hat <LORA:Film Grain>, night")
    assert text == "a cat, in a hat, night" and tags == [("ink_style", 0.6), ("Film Grain", 1.0)]
    found = ["/m/loras/ink_style.safetensors", "/m/loras/film grain.safetensors", "/m/loras/other.safetensors"]
    listed = (LoraSpec("/m/loras/ink_style.safetensors", 1.0),)
    prompt, loras = apply_tags("a cat <lora:ink_style:0.6> <lora:film grain:-0.5>", listed, found)
    assert prompt == "a cat"
    assert loras == (LoraSpec(found[0], 0.6), LoraSpec(found[1], -0.5))  # a tag sets a listed LoRA's weight
    with pytest.raises(UserError, match="no LoRA called 'inkk'"):
        apply_tags("a cat <lora:inkk:1>", (), found)
    assert apply_tags("<lora:ink:1> a cat", (), None) == ("a cat", (LoraSpec("ink", 1.0),))  # a server resolves it


def test_cli_takes_a_lora_tag_from_the_models_folder_and_writes_it_back(tiny_model, lora, tmp_path, monkeypatch):
    import shutil

    from PIL import Image

    from noisebrush.cli import main

    models = tmp_path / "models"
    (models / "loras").mkdir(parents=True)
    shutil.copy(lora, models / "loras" / "ink.safetensors")
    monkeypatch.setenv("NOISEBRUSH_MODELS", str(models))
    out = tmp_path / "o.png"
    assert main(["generate", "--prompt", "a cat <lora:ink:0.7>", "--model", tiny_model, "--steps", "2",
                 "--width", "64", "--height", "64", "--seed", "3", "--out", str(out)]) == 0  # fmt: skip
    saved = read_request(out)
    assert saved.prompt == "a cat" and saved.loras == (LoraSpec(str(models / "loras" / "ink.safetensors"), 0.7),)
    assert Image.open(out).text["parameters"].startswith("a cat <lora:ink:0.7>")
    assert main(["generate", "--prompt", "a cat <lora:nope>", "--model", tiny_model, "--out", str(out)]) == 2


def test_the_window_reads_lora_tags_typed_into_the_prompt(fake_window):
    from noisebrush.engine.backends.base import ModelInfo

    w = fake_window
    w.state.set_models([ModelInfo("/m/loras/ink.safetensors", "ink", "lora", "sd15")])
    w.state.update(prompt="a fox <lora:ink:0.4>")
    req = w.capture_request()
    assert req.prompt == "a fox" and req.loras == (LoraSpec("/m/loras/ink.safetensors", 0.4),)
    w.state.update(prompt="a fox <lora:gone:1>")
    w.generate()  # a tag naming no LoRA is a clear error, not a silent miss
    assert "no LoRA called 'gone'" in w.banner.label.text() and w.state.job is None
