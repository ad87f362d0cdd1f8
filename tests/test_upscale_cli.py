"""`noisebrush upscale` as a person runs it: a 128 px picture to 512 px refined on the embedded model, the PNG's
settings rerun with --from, and one sentence for each bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from test_tiling import tiny_upscaler

from noisebrush.cli import main
from noisebrush.engine.metadata import read_request


@pytest.fixture
def square(tmp_path):
    a = np.zeros((128, 128, 3), np.uint8)
    a[:] = (30, 60, 200)
    a[32:96, 32:96] = (220, 40, 30)
    Image.fromarray(a).save(tmp_path / "in.png")
    return tmp_path / "in.png"


def test_upscale_and_refine_on_the_embedded_model_then_run_it_again(square, tmp_path, capsys):
    out = tmp_path / "big.png"
    args = ["upscale", str(square), "--scale", "4", "--refine", "0.3", "--steps", "10", "--seed", "4",
            "--prompt", "a red square on a blue background", "--out", str(out)]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    assert "128×128 → 512×512" in capsys.readouterr().err
    big = np.asarray(Image.open(out))
    assert big.shape == (512, 512, 3)
    saved = read_request(out)
    assert saved.tiling is not None and saved.strength == 0.3 and saved.init_image.shape == (128, 128, 3)
    again = tmp_path / "again.png"
    assert main(["upscale", "--from", str(out), "--out", str(again)]) == 0
    assert np.array_equal(np.asarray(Image.open(again)), big)  # the same settings, the same picture
    assert big[256, 256, 0] > 150 and big[20, 20, 2] > 150  # still a red square on blue


def test_upscale_only_with_a_model_file(square, tmp_path, capsys):
    model = tiny_upscaler(tmp_path / "2x-tiny.pth", scale=2, fmt="pth")
    out = tmp_path / "x3.png"
    assert main(["upscale", str(square), "--scale", "3", "--upscaler", str(model), "--out", str(out)]) == 0
    assert Image.open(out).size == (384, 384)
    assert "2x-tiny.pth" in capsys.readouterr().err


@pytest.mark.parametrize("extra, words", [
    (["--scale", "0"], "scale must be from 1 to 8"),
    (["--scale", "100"], "scale must be from 1 to 8"),
    (["--refine", "1.5"], "strength must be in"),
    (["--size", "big"], "WIDTHxHEIGHT"),
])  # fmt: skip
def test_bad_settings_say_one_sentence(square, tmp_path, capsys, extra, words):
    assert main(["upscale", str(square), *extra, "--out", str(tmp_path / "o.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_bad_pictures_and_upscalers(tmp_path, capsys):
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(tmp_path / "dot.png")
    torch.save(torch.nn.Conv2d(3, 3, 1), str(tmp_path / "evil.pth"))
    (tmp_path / "notes.safetensors").write_text("hello")
    cases = [(["upscale", str(tmp_path / "dot.png")], "1×1 px picture cannot be upscaled"),
             (["upscale", str(tmp_path / "in.png")], "no such file")]  # fmt: skip
    for args, words in cases:
        assert main([*args, "--out", str(tmp_path / "o.png")]) == 2
        assert words in capsys.readouterr().err
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "in.png")
    for upscaler, words in (("evil.pth", "more than plain weights"), ("notes.safetensors", "notes.safetensors")):
        assert main(["upscale", str(tmp_path / "in.png"), "--upscaler", str(tmp_path / upscaler), "--out",
                     str(tmp_path / "o.png")]) == 2  # fmt: skip
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err
    assert not (tmp_path / "o.png").exists()


def test_a_tile_controlnet_from_the_command_line_is_recorded_and_rerun(tiny_model, square, tmp_path):
    out, again = tmp_path / "held.png", tmp_path / "again.png"
    net = f"{tiny_model}/controlnets/scribble"
    assert main(["upscale", str(square), "--scale", "2", "--refine", "0.5", "--model", tiny_model, "--steps", "4",
                 "--tile", "128", "--tile-controlnet", f"{net}@1.2", "--seed", "1", "--out", str(out)]) == 0  # fmt: skip
    tiling = read_request(out).tiling
    assert (tiling.controlnet, tiling.controlnet_weight, tiling.tile) == (net, 1.2, 128)
    assert main(["upscale", "--from", str(out), "--out", str(again)]) == 0
    assert np.array_equal(np.asarray(Image.open(again)), np.asarray(Image.open(out)))
