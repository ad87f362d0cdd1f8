"""PNG metadata: A1111's text for other tools, our JSON to restore everything."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import circle_sketch
from PIL import Image, PngImagePlugin

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
        mask=np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1)), feather=5,
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


def _png_with_text(path, **chunks) -> str:
    info = PngImagePlugin.PngInfo()
    for key, value in chunks.items():
        info.add_text(key, value, zip=key == "noisebrush")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(path, pnginfo=info)
    return str(path)


def test_every_size_noisebrush_writes_it_reads_back(tmp_path):
    """A 768 px request with a noisy init and depth and pose maps: its JSON inflates far past Pillow's 1 MB."""
    from noisebrush.engine.images import read_image

    rng = np.random.default_rng(0)
    noisy = lambda: rng.integers(0, 256, (768, 768, 3), dtype=np.uint8)  # noqa: E731
    req = GenerationRequest("big", controls=(ControlSpec("depth", noisy()), ControlSpec("pose", noisy())), width=768,
                            height=768, seed=1, init_image=noisy(), strength=0.5)  # fmt: skip
    path = save_png(noisy(), req, tmp_path / "big.png")
    assert read_request(path) == req
    assert read_image(path).image.shape == (768, 768, 3)  # as --init or a control map too


@pytest.mark.parametrize("payload", [
    "[1, 2, 3]", '{"prompt": 5, "steps": 20, "guidance": 5, "width": 64, "height": 64}',
    '{"prompt": "x", "steps": 20, "guidance": 5, "width": 64, "height": 64, "init_image": "bm90IGFuIGltYWdl"}',
    "[" * 100_000 + "]" * 100_000,
    '{"prompt": "x", "steps": 20, "guidance": 5, "width": 64, "height": 64, "controls": [{"kind": "depth", '
    '"weight": NaN, "start": 0, "end": 1, "image": ""}]}',
    '{"prompt": "x", "steps": 1e9, "guidance": 5, "width": 64, "height": 64}',
])  # fmt: skip
def test_hostile_settings_json_is_refused_whole_with_one_line(tmp_path, payload):
    path = _png_with_text(tmp_path / "h.png", noisebrush=payload)
    with pytest.raises(UserError) as err:
        read_request(path)
    assert "\n" not in str(err.value) and "h.png" in str(err.value) or "settings" in str(err.value)


@pytest.mark.parametrize("text", ["x\nSteps: 20, Seed: abc, Size: 64x64", "x\nSteps: 20, Size: 64x"])
def test_broken_a1111_text_is_a_clear_error(tmp_path, text):
    with pytest.raises(UserError, match="cannot"):
        read_request(_png_with_text(tmp_path / "a.png", parameters=text))


def test_a_huge_a1111_line_is_refused_at_once_and_a_long_one_parses_in_linear_time(tmp_path):
    import time

    t0 = time.perf_counter()
    with pytest.raises(UserError, match="not a real one"):
        read_request(_png_with_text(tmp_path / "huge.png", parameters="a" * 1_000_000 + "\nSteps: 20"))
    long_line = "x\nSteps: 20, " + "Lora hashes: " + "ab " * 13_000 + ", Size: 64x64"
    req = read_request(_png_with_text(tmp_path / "long.png", parameters=long_line))
    assert req.steps == 20 and time.perf_counter() - t0 < 2


def test_a_fifo_is_never_opened(tmp_path):
    import os

    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(UserError, match="not a regular file"):
        read_request(fifo)
