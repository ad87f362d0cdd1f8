"""The decode margin (engine/decode_margin.py): the embedded model's pictures have no ring in their bottom-right
corner, and the margin changes neither the decoder's weights nor the picture's size."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from corner_ring import ring_ratio  # noqa: E402

from noisebrush.engine.decode_margin import add_decode_margin, margin_cells
from noisebrush.engine.device import DeviceChoice
from noisebrush.engine.models import load_base, read_model_meta
from noisebrush.engine.paths import default_model_dir


@pytest.fixture(scope="module")
def embedded():
    return load_base("", DeviceChoice("cpu", "float32"))


def test_the_embedded_model_asks_for_a_margin():
    assert margin_cells(read_model_meta(default_model_dir())) == 2


def test_flat_colours_decode_flat_in_the_bottom_right_corner_too(embedded):
    vae = embedded.components["vae"]
    rng = np.random.default_rng(5)
    colours = rng.integers(0, 256, (8, 1, 1, 3)).astype(np.float32)
    flat = torch.from_numpy(np.broadcast_to(colours, (8, 128, 128, 3)).copy()).permute(0, 3, 1, 2) / 127.5 - 1
    with torch.no_grad():
        rec = vae.decode(vae.encode(flat).latent_dist.mode()).sample.clamp(-1, 1)
    assert rec.shape == flat.shape
    images = ((rec + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    ratios = [ring_ratio(i) for i in images]  # the figure (bench/corner_ring.py)
    # Without the margin this decoder scores 1.6-2.0 here: a ring about 10 px in from the corner.
    assert np.mean(ratios) < 1.3, ratios


def test_the_margin_keeps_the_size_and_the_weights_and_is_read_defensively():
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(32, 32), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=8).eval()  # fmt: skip
    z = torch.randn(1, 4, 9, 7)
    with torch.no_grad():
        plain = vae.decode(z).sample
    keys = list(vae.state_dict())
    add_decode_margin(vae.decoder, 2, 2)
    with torch.no_grad():
        padded = vae.decode(z).sample
    assert padded.shape == plain.shape == (1, 3, 18, 14)
    assert list(vae.state_dict()) == keys  # save_pretrained writes diffusers' own keys
    assert not torch.equal(padded, plain)  # the decoder really saw the margin
    for bad in ({}, {"decode_margin": "2"}, {"decode_margin": -1}, {"decode_margin": 99}, {"decode_margin": True}):
        assert margin_cells(bad) == 0
