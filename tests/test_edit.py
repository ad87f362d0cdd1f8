"""Editing: img2img, inpainting through a mask (any model, and 9-channel inpainting UNets), the exact paste-back."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from helpers import circle_sketch, logged_engine

from noisebrush.engine.errors import UserError
from noisebrush.engine.events import Finished
from noisebrush.engine.request import ControlSpec, GenerationRequest


def square_mask(size: int, lo: int, hi: int) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    mask[lo:hi, lo:hi] = 255
    return mask


@pytest.fixture(scope="module")
def inpainting_model(tmp_path_factory, tiny_model):
    """The tiny model with a 9-channel inpainting UNet in place of its own (its ControlNets still fit)."""
    from tiny_model import tiny_unet

    folder = tmp_path_factory.mktemp("inpaint") / "tiny-inpainting"
    shutil.copytree(tiny_model, folder)
    shutil.rmtree(folder / "unet")
    tiny_unet(in_channels=9).save_pretrained(folder / "unet")
    return str(folder)


@pytest.mark.parametrize("which", ["embedded", "9-channel"])
@pytest.mark.parametrize("with_control", [False, True])
def test_inpainting_keeps_every_pixel_outside_the_mask_and_repaints_inside(which, with_control, inpainting_model):
    size = 128 if which == "embedded" else 64
    init = np.zeros((size, size, 3), np.uint8)
    init[:] = (30, 60, 200)
    init[::7] = (250, 250, 0)  # texture, so that a VAE round trip would show
    mask = square_mask(size, size // 4, 3 * size // 4)
    controls = (ControlSpec("scribble", circle_sketch(size)),) if with_control else ()
    req = GenerationRequest("a red circle on a blue background", controls=controls, steps=4, seed=1, width=size,
                            height=size, init_image=init, mask=mask, strength=1.0,
                            model="" if which == "embedded" else inpainting_model)  # fmt: skip
    with logged_engine() as eng:
        end = eng.log.wait_end(eng.submit(req))
    assert isinstance(end, Finished), getattr(end, "message", end)
    out = end.image
    assert np.array_equal(out[mask == 0], init[mask == 0])
    assert np.abs(out[mask > 0].astype(int) - init[mask > 0]).mean() > 10


def test_a_feathered_mask_blends_and_still_keeps_the_far_outside():
    init = np.full((128, 128, 3), 90, np.uint8)
    mask = square_mask(128, 40, 88)
    req = GenerationRequest("a red circle", steps=3, seed=2, init_image=init, mask=mask, feather=8, strength=1.0)
    with logged_engine() as eng:
        out = eng.log.wait_end(eng.submit(req)).image
    far = np.ones((128, 128), bool)
    far[20:108, 20:108] = False
    assert np.array_equal(out[far], init[far])
    ring = out[36:40, 40:88].astype(int)  # just outside the painted square: partly repainted by the feather
    assert np.abs(ring - 90).max() > 0


def test_a_mask_without_an_init_image_or_of_another_size_is_refused():
    with pytest.raises(UserError, match="needs an init image"):
        GenerationRequest("x", mask=square_mask(128, 0, 10)).validate()
    with pytest.raises(UserError, match="the mask is 64×64"):
        GenerationRequest("x", init_image=np.zeros((128, 128, 3), np.uint8), mask=square_mask(64, 0, 10)).validate()


def test_from_a_saved_png_reproduces_it_pixel_for_pixel_and_flags_override(tiny_model, tmp_path):
    from PIL import Image

    from noisebrush.cli import main
    from noisebrush.engine.metadata import read_request

    sketch = tmp_path / "sketch.png"
    Image.fromarray(circle_sketch(64)).save(sketch)
    first = tmp_path / "first.png"
    assert main(["generate", "--prompt", "a red circle", "--model", tiny_model, "--steps", "3", "--scheduler", "Euler a",
                 "--control", f"scribble={sketch}@0.7", "--width", "64", "--height", "64", "--out", str(first)]) == 0  # fmt: skip
    again = tmp_path / "again.png"
    assert main(["generate", "--from", str(first), "--out", str(again)]) == 0
    assert np.array_equal(np.asarray(Image.open(first)), np.asarray(Image.open(again)))
    assert read_request(again) == read_request(first)
    other = tmp_path / "other.png"
    assert main(["generate", "--from", str(first), "--seed", "9", "--out", str(other)]) == 0
    assert read_request(other).seed == 9 and read_request(other).controls == read_request(first).controls


def test_cli_inpaint_extend_and_batch(tiny_model, tmp_path):
    from PIL import Image

    from noisebrush.cli import main
    from noisebrush.engine.metadata import read_request

    init = np.zeros((64, 64, 3), np.uint8)
    init[:, :, 2] = 200
    init[::5] = 255
    Image.fromarray(init).save(tmp_path / "init.png")
    Image.fromarray(square_mask(64, 16, 48)).save(tmp_path / "mask.png")
    base = ["generate", "--prompt", "x", "--model", tiny_model, "--steps", "2", "--width", "64", "--height", "64",
            "--init", str(tmp_path / "init.png")]  # fmt: skip
    assert main([*base, "--mask", str(tmp_path / "mask.png"), "--out", str(tmp_path / "in.png")]) == 0
    out = np.asarray(Image.open(tmp_path / "in.png"))
    keep = square_mask(64, 16, 48) == 0
    assert np.array_equal(out[keep], init[keep])
    assert main([*base, "--extend", "16,0,16,8", "--out", str(tmp_path / "wide.png")]) == 0
    wide = np.asarray(Image.open(tmp_path / "wide.png"))
    assert wide.shape == (72, 96, 3) and np.array_equal(wide[0:64, 16:80], init)  # the old picture, untouched
    assert main([*base, "--batch", "3", "--seed", "5", "--out", str(tmp_path / "v.png")]) == 0
    assert [read_request(tmp_path / f"v-{i}.png").seed for i in (1, 2, 3)] == [5, 6, 7]
