"""Decode with a margin of latent cells past the picture's bottom and right edges, then crop it off.

The embedded model's VAE decoder draws a ring about 10 px in from the bottom-right corner of every picture
(issue 30, bench/corner_ring.py). Its last norm is a GroupNorm with one channel per group, a per-channel instance
norm: on a flat picture each channel's variance is near zero, and the decoder learnt to keep it finite with one
massive activation at a place its zero padding lets it find, the bottom-right corner (StyleGAN's "droplet" has the
same cause). It appears even for a constant latent, so no UNet or sampler change removes it, and penalising it
in training only moved it. A margin gives it somewhere to go outside the picture, as registers do for a vision
transformer's attention sinks; the decoder was fine-tuned with the margin in place (training/finetune_decoder.py).

A model folder asks for it in noisebrush.json: "decode_margin": cells. Forward hooks add it, so the decoder's
modules and weights stay diffusers' own (save_pretrained writes the same keys).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

META_KEY = "decode_margin"


def margin_cells(meta: dict[str, Any]) -> int:
    """The margin a model folder's noisebrush.json asks for, in latent cells (0: none)."""
    cells = meta.get(META_KEY, 0)
    return cells if type(cells) is int and 0 < cells <= 8 else 0  # a bool is an int to isinstance


def vae_with_margin(vae_dir: str | Path, dtype: torch.dtype = torch.float32) -> Any:
    """A model folder's AutoencoderKL (`<folder>/vae`) decoding as the app does, with the folder's margin: for the
    benches and training scripts that load the VAE alone."""
    from diffusers import AutoencoderKL

    from noisebrush.engine.models import read_model_meta

    vae = AutoencoderKL.from_pretrained(vae_dir, torch_dtype=dtype).eval()
    add_vae_margin(vae, margin_cells(read_model_meta(Path(vae_dir).parent)))
    return vae


def add_vae_margin(vae: Any, cells: int) -> None:
    """add_decode_margin on a diffusers AutoencoderKL's decoder, at its own pixels per latent cell."""
    add_decode_margin(vae.decoder, cells, 2 ** (len(vae.config.block_out_channels) - 1))


def add_decode_margin(decoder: torch.nn.Module, cells: int, factor: int) -> None:
    """Make `decoder(z, ...)` decode z edge-padded by `cells` on the bottom and right and return the picture
    without them. `factor`: pixels per latent cell. Replicate padding commutes with a 1×1 post_quant_conv, so
    the hooks may sit on a decoder that includes it or one that does not."""
    if cells <= 0:
        return
    crop = cells * factor

    def pad(_module: torch.nn.Module, args: tuple) -> tuple:
        return (F.pad(args[0], (0, cells, 0, cells), mode="replicate"), *args[1:])

    def cut(_module: torch.nn.Module, _args: tuple, out: torch.Tensor) -> torch.Tensor:
        return out[..., : out.shape[-2] - crop, : out.shape[-1] - crop]

    decoder.register_forward_pre_hook(pad)
    decoder.register_forward_hook(cut)
