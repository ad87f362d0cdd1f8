"""Write the config folders that let `from_single_file` open SD3/SD3.5 and Flux.1 checkpoints offline.

    python packaging/make_flow_configs.py T5_TOKENIZER_DIR [--out assets/configs]

T5_TOKENIZER_DIR holds google/t5-v1_1-xxl's tokenizer (tokenizer.json, special_tokens_map.json,
tokenizer_config.json; Apache-2.0), e.g. ComfyUI's comfy/text_encoders/t5_tokenizer. The CLIP tokenizers are the
ones make_configs.py writes for SD1.5 (CLIP-L and OpenCLIP-G share the BPE vocabulary; SD3's second one pads with
"!"): the loader passes them in, so they are not copied into every folder. The configs are those of the published
stabilityai/stable-diffusion-3-medium-diffusers, stable-diffusion-3.5-medium / -large and black-forest-labs/FLUX.1-dev
/ -schnell repositories.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

VAE16 = {
    "_class_name": "AutoencoderKL", "act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4, "in_channels": 3,
    "out_channels": 3, "latent_channels": 16, "layers_per_block": 2, "norm_num_groups": 32, "sample_size": 1024,
    "force_upcast": True, "use_quant_conv": False, "use_post_quant_conv": False, "mid_block_add_attention": True,
}  # fmt: skip
SD3_VAE = {**VAE16, "scaling_factor": 1.5305, "shift_factor": 0.0609}
FLUX_VAE = {**VAE16, "scaling_factor": 0.3611, "shift_factor": 0.1159}
CLIP_COMMON = {"model_type": "clip_text_model", "max_position_embeddings": 77, "vocab_size": 49408, "layer_norm_eps": 1e-05,
               "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1, "torch_dtype": "float16"}  # fmt: skip
CLIP_L = {**CLIP_COMMON, "hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12, "num_hidden_layers": 12,
          "hidden_act": "quick_gelu", "projection_dim": 768}  # fmt: skip
CLIP_G = {**CLIP_COMMON, "hidden_size": 1280, "intermediate_size": 5120, "num_attention_heads": 20, "num_hidden_layers": 32,
          "hidden_act": "gelu", "projection_dim": 1280}  # fmt: skip
T5_XXL = {
    "architectures": ["T5EncoderModel"], "model_type": "t5", "d_ff": 10240, "d_kv": 64, "d_model": 4096,
    "decoder_start_token_id": 0, "dropout_rate": 0.1, "eos_token_id": 1, "feed_forward_proj": "gated-gelu",
    "dense_act_fn": "gelu_new", "is_gated_act": True, "initializer_factor": 1.0, "is_encoder_decoder": True,
    "layer_norm_epsilon": 1e-06, "num_decoder_layers": 24, "num_heads": 64, "num_layers": 24, "pad_token_id": 0,
    "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128, "tie_word_embeddings": False,
    "vocab_size": 32128, "torch_dtype": "float16",
}  # fmt: skip
SD3_TRANSFORMER = {
    "_class_name": "SD3Transformer2DModel", "attention_head_dim": 64, "caption_projection_dim": 1536, "in_channels": 16,
    "joint_attention_dim": 4096, "num_attention_heads": 24, "num_layers": 24, "out_channels": 16, "patch_size": 2,
    "pooled_projection_dim": 2048, "pos_embed_max_size": 192, "sample_size": 128,
}  # fmt: skip
SD35_MEDIUM_TRANSFORMER = {**SD3_TRANSFORMER, "pos_embed_max_size": 384, "qk_norm": "rms_norm",
                           "dual_attention_layers": list(range(13))}  # fmt: skip
SD35_LARGE_TRANSFORMER = {**SD3_TRANSFORMER, "caption_projection_dim": 2432, "num_attention_heads": 38, "num_layers": 38,
                          "qk_norm": "rms_norm", "dual_attention_layers": []}  # fmt: skip
FLUX_TRANSFORMER = {
    "_class_name": "FluxTransformer2DModel", "attention_head_dim": 128, "axes_dims_rope": [16, 56, 56],
    "guidance_embeds": True, "in_channels": 64, "joint_attention_dim": 4096, "num_attention_heads": 24, "num_layers": 19,
    "num_single_layers": 38, "patch_size": 1, "pooled_projection_dim": 768,
}  # fmt: skip
SD3_SCHEDULER = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 3.0}
FLUX_DEV_SCHEDULER = {**SD3_SCHEDULER, "use_dynamic_shifting": True, "base_shift": 0.5, "max_shift": 1.15,
                      "base_image_seq_len": 256, "max_image_seq_len": 4096}  # fmt: skip
FLUX_SCHNELL_SCHEDULER = {**FLUX_DEV_SCHEDULER, "shift": 1.0, "use_dynamic_shifting": False}
SD3_INDEX = {
    "_class_name": "StableDiffusion3Pipeline", "_diffusers_version": "0.30.0",
    "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
    "text_encoder": ["transformers", "CLIPTextModelWithProjection"],
    "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"], "text_encoder_3": ["transformers", "T5EncoderModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"], "tokenizer_2": ["transformers", "CLIPTokenizer"],
    "tokenizer_3": ["transformers", "T5TokenizerFast"], "transformer": ["diffusers", "SD3Transformer2DModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}  # fmt: skip
FLUX_INDEX = {
    "_class_name": "FluxPipeline", "_diffusers_version": "0.30.0", "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"], "text_encoder_2": ["transformers", "T5EncoderModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"], "tokenizer_2": ["transformers", "T5TokenizerFast"],
    "transformer": ["diffusers", "FluxTransformer2DModel"], "vae": ["diffusers", "AutoencoderKL"],
}  # fmt: skip


def write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")


def write_sd3(folder: Path, transformer: dict) -> None:
    write(folder / "model_index.json", SD3_INDEX)
    write(folder / "scheduler" / "scheduler_config.json", SD3_SCHEDULER)
    write(folder / "transformer" / "config.json", transformer)
    write(folder / "vae" / "config.json", SD3_VAE)
    write(folder / "text_encoder" / "config.json", {"architectures": ["CLIPTextModelWithProjection"], **CLIP_L})
    write(folder / "text_encoder_2" / "config.json", {"architectures": ["CLIPTextModelWithProjection"], **CLIP_G})
    write(folder / "text_encoder_3" / "config.json", T5_XXL)


def write_flux(folder: Path, guidance: bool, scheduler: dict) -> None:
    write(folder / "model_index.json", FLUX_INDEX)
    write(folder / "scheduler" / "scheduler_config.json", scheduler)
    write(folder / "transformer" / "config.json", {**FLUX_TRANSFORMER, "guidance_embeds": guidance})
    write(folder / "vae" / "config.json", FLUX_VAE)
    write(folder / "text_encoder" / "config.json", {"architectures": ["CLIPTextModel"], **CLIP_L})
    write(folder / "text_encoder_2" / "config.json", T5_XXL)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("t5_tokenizer", type=Path)
    ap.add_argument("--out", type=Path, default=Path("assets/configs"))
    args = ap.parse_args()
    write_sd3(args.out / "sd3", SD3_TRANSFORMER)
    write_sd3(args.out / "sd35-medium", SD35_MEDIUM_TRANSFORMER)
    write_sd3(args.out / "sd35-large", SD35_LARGE_TRANSFORMER)
    write_flux(args.out / "flux-dev", True, FLUX_DEV_SCHEDULER)
    write_flux(args.out / "flux-schnell", False, FLUX_SCHNELL_SCHEDULER)
    t5 = args.out / "t5-tokenizer"
    t5.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "special_tokens_map.json", "tokenizer_config.json"):
        shutil.copyfile(args.t5_tokenizer / name, t5 / name)


if __name__ == "__main__":
    main()
