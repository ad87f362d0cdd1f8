"""PNG metadata: A1111's text for other tools, our JSON to restore everything."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import circle_sketch
from PIL import Image

from noisebrush.engine.errors import UserError
from noisebrush.engine.metadata import a1111_parameters, read_request, save_png
from noisebrush.engine.request import ControlSpec, GenerationRequest


def full_request() -> GenerationRequest:
    return GenerationRequest(
        prompt="a red circle, on a blue background",
        negative_prompt="blurry",
        controls=(
            ControlSpec("scribble", circle_sketch(), 0.8, 0.1, 0.9),
            ControlSpec("depth", np.full((64, 64, 3), 90, np.uint8), 0.5),
        ),
        steps=23, guidance=6.5, seed=1234, width=64, height=64, scheduler="Euler a",
        init_image=np.full((64, 64, 3), 30, np.uint8), strength=0.6, model="/models/x",
    )  # fmt: skip


def test_round_trip_restores_every_setting(tmp_path):
    req = full_request()
    path = save_png(np.zeros((64, 64, 3), np.uint8), req, tmp_path / "a.png", "x")
    assert read_request(path) == req
    assert read_request(path) != req.replace(seed=1)


def test_a1111_text_has_the_usual_shape(tmp_path):
    req = full_request()
    text = a1111_parameters(req, "mymodel")
    lines = text.split("\n")
    assert lines[0] == req.prompt
    assert lines[1] == "Negative prompt: blurry"
    assert lines[2].startswith("Steps: 23, Sampler: Euler a, CFG scale: 6.5, Seed: 1234, Size: 64x64, Model: mymodel")
    path = save_png(np.zeros((64, 64, 3), np.uint8), req, tmp_path / "b.png", "mymodel")
    assert Image.open(path).text["parameters"] == text


def test_a1111_only_png_restores_the_basic_settings(tmp_path):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text(
        "parameters",
        "a cat\nNegative prompt: dog\nSteps: 30, Sampler: Euler a, CFG scale: 7, Seed: 42, Size: 512x768, Model: sd15",
    )
    Image.new("RGB", (8, 8)).save(tmp_path / "a1111.png", pnginfo=info)
    req = read_request(tmp_path / "a1111.png")
    assert (req.prompt, req.negative_prompt, req.steps, req.scheduler, req.guidance, req.seed, req.width, req.height) == (
        "a cat", "dog", 30, "Euler a", 7.0, 42, 512, 768)  # fmt: skip


def test_png_without_settings_says_so(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "plain.png")
    with pytest.raises(UserError, match="holds no generation settings"):
        read_request(tmp_path / "plain.png")


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", boom)
    with pytest.raises(OSError):
        save_png(np.zeros((8, 8, 3), np.uint8), GenerationRequest("x", width=8, height=8), tmp_path / "c.png")
    assert list(tmp_path.iterdir()) == []
