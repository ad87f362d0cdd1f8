"""Tiny seeded IP-Adapters in h94/IP-Adapter's layout and key names, for the tiny models the tests build.

`<root>/models/ip-adapter_sd15.safetensors` (or `sdxl_models/ip-adapter_sdxl_vit-h.safetensors`) with a tiny
CLIPVisionModelWithProjection in `<root>/models/image_encoder/`, as in the Hub repo. Keys: `image_proj.proj.*` and
`image_proj.norm.*` (4 tokens), or `image_proj.latents`/`proj_in`/… for a -plus adapter, and
`ip_adapter.{1,3,5,…}.to_k_ip/to_v_ip.weight`, one odd id per cross-attention layer in `unet.attn_processors` order.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

ENCODER = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, image_size=32,
               patch_size=8, projection_dim=16)  # fmt: skip


def write_encoder(folder: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    CLIPVisionModelWithProjection(CLIPVisionConfig(**ENCODER)).save_pretrained(folder, safe_serialization=True)
    return folder


def adapter_state(unet: UNet2DConditionModel, seed: int = 0, gain: float = 3.0) -> dict[str, torch.Tensor]:
    """Random weights shaped for `unet`; `gain` makes the reference visibly change a tiny model's picture."""
    gen = torch.Generator().manual_seed(seed)
    cross = unet.config.cross_attention_dim
    d = ENCODER["projection_dim"]
    state = {
        "image_proj.proj.weight": torch.randn(4 * cross, d, generator=gen) * gain / d**0.5,
        "image_proj.proj.bias": torch.zeros(4 * cross),
        "image_proj.norm.weight": torch.ones(cross),
        "image_proj.norm.bias": torch.zeros(cross),
    }
    modules = dict(unet.named_modules())
    names = [n for n in unet.attn_processors if not n.endswith("attn1.processor")]
    for i, name in enumerate(names):
        hidden = modules[name.removesuffix(".processor")].to_k.out_features
        for part in ("k", "v"):
            state[f"ip_adapter.{2 * i + 1}.to_{part}_ip.weight"] = torch.randn(hidden, cross, generator=gen) * gain / cross**0.5
    return state


def write_ip_adapter(root: Path, model_folder: str | Path, sdxl: bool = False, seed: int = 0) -> Path:
    """h94's layout under `root` for the model in `model_folder`; returns the adapter file."""
    unet = UNet2DConditionModel.from_pretrained(Path(model_folder) / "unet")
    write_encoder(root / "models" / "image_encoder")
    path = root / ("sdxl_models/ip-adapter_sdxl_vit-h.safetensors" if sdxl else "models/ip-adapter_sd15.safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(adapter_state(unet, seed), str(path))
    return path
