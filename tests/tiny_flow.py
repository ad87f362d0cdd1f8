"""Tiny seeded flow-matching models (SD3- and Flux-shaped), built from configs as diffusers' own tests build them.

Everything is made here, offline: the transformer, a ControlNet, a 16-channel VAE (f = 8, with SD3's or Flux's
shift and scale), CLIP text encoders with the CLIP tokenizer bundled in assets/, and for Flux a tiny T5 encoder
with a Unigram tokenizer built from a few words. SD3 is saved without T5 (text_encoder_3=None), a real user path.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler

WORDS = "a red green blue circle square cat dog tree house sky sun the of in on".split()


def tiny_vae16(shift: float, scale: float) -> AutoencoderKL:
    torch.manual_seed(0)
    return AutoencoderKL(
        block_out_channels=(16, 16, 16, 16), in_channels=3, out_channels=3, latent_channels=16, layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=16,
        use_quant_conv=False, use_post_quant_conv=False, shift_factor=shift, scaling_factor=scale,
    )  # fmt: skip


def _clip_tokenizer():
    from transformers import CLIPTokenizer

    from noisebrush.engine.paths import assets_dir

    return CLIPTokenizer.from_pretrained(assets_dir() / "configs" / "sd15" / "tokenizer")


def _clip_config(hidden: int):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(hidden_size=hidden, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                          vocab_size=49408, projection_dim=hidden, hidden_act="gelu")  # fmt: skip


def randomise_zeros(net: torch.nn.Module, seed: int, scale: float = 0.5) -> torch.nn.Module:
    """ControlNets start with zeroed output layers and do nothing; random ones change the result, as trained ones do."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            if p.abs().sum() == 0:
                p.copy_(torch.randn(p.shape, generator=gen) * scale)
    return net


def sd3_controlnet(seed: int = 10):
    from diffusers import SD3ControlNetModel

    torch.manual_seed(seed)
    net = SD3ControlNetModel(sample_size=8, patch_size=2, in_channels=16, num_layers=1, attention_head_dim=8,
                             num_attention_heads=4, joint_attention_dim=64, caption_projection_dim=32,
                             pooled_projection_dim=64, out_channels=16, pos_embed_max_size=16)  # fmt: skip
    return randomise_zeros(net, seed)


def flux_controlnet(seed: int = 10):
    from diffusers import FluxControlNetModel

    torch.manual_seed(seed)
    net = FluxControlNetModel(patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=16,
                              num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
                              guidance_embeds=True, axes_dims_rope=(4, 4, 8))  # fmt: skip
    return randomise_zeros(net, seed)


def write_sd3_folder(folder: Path, with_controlnet: bool = True) -> Path:
    """An SD3-shaped pipeline: two CLIP encoders with projections (32 + 32 wide), no T5, a 16-channel VAE."""
    from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=16, num_layers=2, attention_head_dim=8,
                                        num_attention_heads=4, joint_attention_dim=64, caption_projection_dim=32,
                                        pooled_projection_dim=64, out_channels=16, pos_embed_max_size=16)  # fmt: skip
    te1, te2 = CLIPTextModelWithProjection(_clip_config(32)), CLIPTextModelWithProjection(_clip_config(32))
    tok = _clip_tokenizer()
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, vae=tiny_vae16(0.0609, 1.5305), text_encoder=te1, text_encoder_2=te2, text_encoder_3=None,
        tokenizer=tok, tokenizer_2=tok, tokenizer_3=None, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
    )  # fmt: skip
    pipe.save_pretrained(folder)
    if with_controlnet:
        sd3_controlnet().save_pretrained(folder / "controlnets" / "scribble")
    return folder


def t5_tokenizer():
    """A T5 tokenizer (Unigram, as T5's SentencePiece model is) over a few words: no download, no sentencepiece."""
    from transformers import T5TokenizerFast

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [(f"▁{w}", -3.0 - i * 0.01) for i, w in enumerate(WORDS)]
    vocab += [(c, -8.0) for c in "abcdefghijklmnopqrstuvwxyz"]
    return T5TokenizerFast(vocab=vocab, extra_ids=0, model_max_length=512)


def write_flux_folder(folder: Path, with_controlnet: bool = True) -> Path:
    """A Flux-shaped pipeline: CLIP (pooled, 32 wide), a tiny T5 (32 wide), a packed 64-channel transformer with
    the distilled guidance embedding, and a 16-channel VAE with Flux's shift and scale."""
    from diffusers import FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel, T5Config, T5EncoderModel

    tok2 = t5_tokenizer()
    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=64, num_layers=1, num_single_layers=1,
                                         attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                         pooled_projection_dim=32, guidance_embeds=True, axes_dims_rope=(4, 4, 8))  # fmt: skip
    t5 = T5EncoderModel(T5Config(vocab_size=len(tok2), d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                                 decoder_start_token_id=0))  # fmt: skip
    pipe = FluxPipeline(
        transformer=transformer, vae=tiny_vae16(0.1159, 0.3611), text_encoder=CLIPTextModel(_clip_config(32)),
        text_encoder_2=t5, tokenizer=_clip_tokenizer(), tokenizer_2=tok2,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                  base_image_seq_len=256, max_image_seq_len=4096),
    )  # fmt: skip
    pipe.save_pretrained(folder)
    if with_controlnet:
        flux_controlnet().save_pretrained(folder / "controlnets" / "scribble")
    return folder


def fit_preview(folder: Path, n: int = 24) -> None:
    """A linear latent→RGB map fitted to this random VAE (the published tables fit the real VAEs only), saved as the
    folder's preview.json: decode random model-space latents, downscale the pictures to latent size, least squares."""
    from noisebrush.engine.previews import fit_linear_preview

    vae = AutoencoderKL.from_pretrained(folder / "vae")
    gen = torch.Generator().manual_seed(1)
    lat = torch.randn(n, 16, 8, 8, generator=gen)
    with torch.no_grad():
        img = vae.decode(lat / vae.config.scaling_factor + vae.config.shift_factor).sample.clamp(-1, 1)
    small = torch.nn.functional.avg_pool2d(img, 8).permute(0, 2, 3, 1).numpy()
    fit_linear_preview(lat.numpy(), small).save(folder)


def set_defaults(folder: Path, **defaults: object) -> None:
    (folder / "noisebrush.json").write_text(json.dumps({"defaults": {"width": 64, "height": 64, "steps": 3, **defaults}}))


def mean_colour_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference (0–255) between two pictures brought to the smaller one's size."""
    import cv2

    h, w = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
    small = [cv2.resize(x, (w, h), interpolation=cv2.INTER_AREA).astype(float) for x in (a, b)]
    return float(np.abs(small[0] - small[1]).mean())
