"""Write the config folders that let `from_single_file` open SD1.5 and SDXL checkpoints and ControlNets offline.

    python packaging/make_configs.py BPE_FILE [--out assets/configs]

BPE_FILE is CLIP's `bpe_simple_vocab_16e6.txt.gz` (shipped in the open-clip-torch wheel); the CLIP
tokenizer's vocab.json and merges.txt are built from it exactly as CLIP's own tokenizer builds them.
The configs are those of the published SD1.5 and ControlNet 1.1 repositories.
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

SD15_BLOCKS = ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]
SD15_UNET = {
    "_class_name": "UNet2DConditionModel", "act_fn": "silu", "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False, "cross_attention_dim": 768, "down_block_types": SD15_BLOCKS, "downsample_padding": 1,
    "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4, "layers_per_block": 2, "mid_block_scale_factor": 1,
    "norm_eps": 1e-05, "norm_num_groups": 32, "out_channels": 4, "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}  # fmt: skip
SD15_VAE = {
    "_class_name": "AutoencoderKL", "act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4, "in_channels": 3,
    "out_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32, "sample_size": 512,
    "scaling_factor": 0.18215,
}  # fmt: skip
CLIP_L_TEXT = {
    "architectures": ["CLIPTextModel"], "model_type": "clip_text_model", "hidden_size": 768, "intermediate_size": 3072,
    "num_attention_heads": 12, "num_hidden_layers": 12, "max_position_embeddings": 77, "vocab_size": 49408,
    "hidden_act": "quick_gelu", "projection_dim": 768, "layer_norm_eps": 1e-05, "bos_token_id": 0, "eos_token_id": 2,
    "pad_token_id": 1, "torch_dtype": "float32",
}  # fmt: skip
SD15_SCHEDULER = {
    "_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000, "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1, "clip_sample": False,
}  # fmt: skip
SD15_INDEX = {
    "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.30.0", "feature_extractor": [None, None],
    "safety_checker": [None, None], "requires_safety_checker": False, "scheduler": ["diffusers", "PNDMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
}  # fmt: skip
CONTROLNET_SD15 = {
    **{k: v for k, v in SD15_UNET.items() if k not in ("out_channels", "sample_size", "up_block_types", "center_input_sample")},
    "_class_name": "ControlNetModel", "conditioning_embedding_out_channels": [16, 32, 96, 256],
    "controlnet_conditioning_channel_order": "rgb", "class_embed_type": None, "num_class_embeds": None,
    "only_cross_attention": False, "projection_class_embeddings_input_dim": None, "resnet_time_scale_shift": "default",
    "upcast_attention": False, "use_linear_projection": False,
}  # fmt: skip


SDXL_UNET = {
    "_class_name": "UNet2DConditionModel", "act_fn": "silu", "addition_embed_type": "text_time",
    "addition_embed_type_num_heads": 64, "addition_time_embed_dim": 256, "attention_head_dim": [5, 10, 20],
    "block_out_channels": [320, 640, 1280], "center_input_sample": False, "cross_attention_dim": 2048,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"], "downsample_padding": 1,
    "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4, "layers_per_block": 2, "mid_block_scale_factor": 1,
    "norm_eps": 1e-05, "norm_num_groups": 32, "out_channels": 4, "projection_class_embeddings_input_dim": 2816,
    "sample_size": 128, "transformer_layers_per_block": [1, 2, 10], "use_linear_projection": True,
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
}  # fmt: skip
SDXL_VAE = {**SD15_VAE, "sample_size": 1024, "scaling_factor": 0.13025, "force_upcast": True}
CLIP_G_TEXT = {
    "architectures": ["CLIPTextModelWithProjection"], "model_type": "clip_text_model", "hidden_size": 1280,
    "intermediate_size": 5120, "num_attention_heads": 20, "num_hidden_layers": 32, "max_position_embeddings": 77,
    "vocab_size": 49408, "hidden_act": "gelu", "projection_dim": 1280, "layer_norm_eps": 1e-05, "bos_token_id": 0,
    "eos_token_id": 2, "pad_token_id": 1, "torch_dtype": "float32",
}  # fmt: skip
SDXL_SCHEDULER = {
    "_class_name": "EulerDiscreteScheduler", "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000, "steps_offset": 1, "timestep_spacing": "leading", "interpolation_type": "linear",
    "prediction_type": "epsilon", "use_karras_sigmas": False,
}  # fmt: skip
SDXL_INDEX = {
    "_class_name": "StableDiffusionXLPipeline", "_diffusers_version": "0.30.0", "force_zeros_for_empty_prompt": True,
    "scheduler": ["diffusers", "EulerDiscreteScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
    "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"], "tokenizer": ["transformers", "CLIPTokenizer"],
    "tokenizer_2": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}  # fmt: skip
CONTROLNET_SDXL = {
    **{k: v for k, v in SDXL_UNET.items() if k not in ("out_channels", "sample_size", "up_block_types", "center_input_sample")},
    "_class_name": "ControlNetModel", "conditioning_embedding_out_channels": [16, 32, 96, 256],
    "controlnet_conditioning_channel_order": "rgb", "class_embed_type": None, "num_class_embeds": None,
    "only_cross_attention": False, "resnet_time_scale_shift": "default", "upcast_attention": False,
}  # fmt: skip


def bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def write_clip_tokenizer(bpe_file: Path, out: Path, pad_token: str = "<|endoftext|>") -> None:
    merges = gzip.open(bpe_file).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    pairs = [tuple(m.split()) for m in merges]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(p) for p in pairs] + ["<|startoftext|>", "<|endoftext|>"]
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(p) for p in pairs) + "\n")
    special = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "pad_token": pad_token,
        "unk_token": "<|endoftext|>",
    }
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=1))
    (out / "tokenizer_config.json").write_text(
        json.dumps({**special, "model_max_length": 77, "do_lower_case": True, "tokenizer_class": "CLIPTokenizer"}, indent=1)
    )


def write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("bpe_file", type=Path)
    ap.add_argument("--out", type=Path, default=Path("assets/configs"))
    args = ap.parse_args()
    sd15 = args.out / "sd15"
    write(sd15 / "model_index.json", SD15_INDEX)
    write(sd15 / "unet" / "config.json", SD15_UNET)
    write(sd15 / "vae" / "config.json", SD15_VAE)
    write(sd15 / "text_encoder" / "config.json", CLIP_L_TEXT)
    write(sd15 / "scheduler" / "scheduler_config.json", SD15_SCHEDULER)
    write_clip_tokenizer(args.bpe_file, sd15 / "tokenizer")
    write(args.out / "controlnet-sd15" / "config.json", CONTROLNET_SD15)
    sdxl = args.out / "sdxl"
    write(sdxl / "model_index.json", SDXL_INDEX)
    write(sdxl / "unet" / "config.json", SDXL_UNET)
    write(sdxl / "vae" / "config.json", SDXL_VAE)
    write(sdxl / "text_encoder" / "config.json", {**CLIP_L_TEXT, "projection_dim": 768})
    write(sdxl / "text_encoder_2" / "config.json", CLIP_G_TEXT)
    write(sdxl / "scheduler" / "scheduler_config.json", SDXL_SCHEDULER)
    # SDXL's two tokenizers are sd15's BPE (the second padded with "!"): engine/paths.clip_tokenizers builds them
    write(args.out / "controlnet-sdxl" / "config.json", CONTROLNET_SDXL)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
