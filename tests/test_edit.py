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
