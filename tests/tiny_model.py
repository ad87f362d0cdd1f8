"""Tiny seeded SD1.5-shaped models built from configs, saved as Noisebrush model folders.

They run in milliseconds and exercise the same diffusers code paths as real models.
The text encoder is the embedded model's packed MiniLM (384-d), named in noisebrush.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, UNet2DConditionModel

UNET_CHANNELS = (32, 64)


def tiny_unet(cross_attention_dim: int = 384, in_channels: int = 4) -> UNet2DConditionModel:
    """in_channels=9: an inpainting UNet (latents, mask and masked-image latents)."""
    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=in_channels,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=UNET_CHANNELS,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=4,
        norm_num_groups=16,
    )


def tiny_vae() -> AutoencoderKL:
    torch.manual_seed(0)
    return AutoencoderKL(
        block_out_channels=(16, 16, 16, 16),  # f = 8, as in SD
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=16,
    )


def tiny_controlnet(unet: UNet2DConditionModel, seed: int) -> ControlNetModel:
    net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 8, 8, 16))
    # from_unet zero-initialises the output convs: a fresh ControlNet would do nothing.
    # Random outputs make the control visibly change the result, as a trained one does.
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            if p.abs().sum() == 0:
                p.copy_(torch.randn(p.shape, generator=gen) * 2.0)
    return net


def write_model_folder(folder: Path, kinds: tuple[str, ...] = ("scribble", "depth", "pose")) -> Path:
    """A Noisebrush model folder: diffusers components + controlnets/<kind>/ + noisebrush.json."""
    folder.mkdir(parents=True, exist_ok=True)
    unet, vae = tiny_unet(), tiny_vae()
    unet.save_pretrained(folder / "unet")
    vae.save_pretrained(folder / "vae")
    DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, steps_offset=1
    ).save_pretrained(folder / "scheduler")
    for i, kind in enumerate(kinds):
        tiny_controlnet(unet, seed=10 + i).save_pretrained(folder / "controlnets" / kind)
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": "0.30.0",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": [None, None],
        "tokenizer": [None, None],
        "safety_checker": [None, None],
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=1))
    meta = {"text_encoder": "minilm-l6", "defaults": {"width": 64, "height": 64, "steps": 4, "guidance": 5.0}}
    (folder / "noisebrush.json").write_text(json.dumps(meta, indent=1))
    return folder


def write_sdxl_folder(folder: Path, with_controlnet: bool = True) -> Path:
    """A tiny SDXL-shaped pipeline (two CLIP text encoders, text_time conditioning), as diffusers' own tests build it."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from noisebrush.engine.paths import assets_dir

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1), projection_class_embeddings_input_dim=96, cross_attention_dim=80, norm_num_groups=16,
    )  # fmt: skip
    # two encoders of different widths, as in SDXL (diffusers tells them apart by width): 32 + 48 = 80-wide context
    cfg = CLIPTextConfig(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, vocab_size=49408,
                         projection_dim=32, hidden_act="gelu")  # fmt: skip
    cfg2 = CLIPTextConfig(hidden_size=48, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, vocab_size=49408,
                          projection_dim=48, hidden_act="gelu")  # fmt: skip
    tokenizer = CLIPTokenizer.from_pretrained(assets_dir() / "configs" / "sd15" / "tokenizer")
    pipe = StableDiffusionXLPipeline(
        vae=tiny_vae(), text_encoder=CLIPTextModel(cfg), text_encoder_2=CLIPTextModelWithProjection(cfg2), tokenizer=tokenizer,
        tokenizer_2=tokenizer, unet=unet, scheduler=EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085,
        beta_end=0.012, steps_offset=1, timestep_spacing="leading"),
    )  # fmt: skip
    pipe.save_pretrained(folder)
    if with_controlnet:
        net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 8, 8, 16))
        net.save_pretrained(folder / "controlnets" / "scribble")
    (folder / "noisebrush.json").write_text(json.dumps({"defaults": {"width": 64, "height": 64, "steps": 3, "guidance": 5.0}}))
    return folder
