"""Write tiny SD3 and Flux pipelines as original-layout single-file checkpoints (Stability's / BFL's key names, with
ComfyUI's all-in-one prefixes for the VAE and text encoders): the layout diffusers' from_single_file reads.

The inverse of diffusers' convert_sd3_transformer_checkpoint_to_diffusers and
convert_flux_transformer_checkpoint_to_diffusers; round trips are checked against them.
"""

from __future__ import annotations

import inspect
import shutil
from pathlib import Path
from typing import Any

import torch

DIT = "model.diffusion_model."


def _swap(w: torch.Tensor) -> torch.Tensor:
    """Original AdaLayerNormContinuous splits shift, scale; diffusers scale, shift (the swap is its own inverse)."""
    a, b = w.chunk(2, dim=0)
    return torch.cat([b, a], dim=0)


def _cat(sd: dict, *names: str) -> torch.Tensor:
    return torch.cat([sd[n] for n in names], dim=0)


def _finish(sd: dict, out: dict, simple: dict[str, str]) -> dict[str, torch.Tensor]:
    """The renames both layouts share: plain prefixes, and the final layer's modulation (shift and scale swapped)."""
    for k, v in sd.items():
        for d, l in simple.items():
            if k.startswith(d + "."):
                out[l + k[len(d) :]] = v
    for kind in ("weight", "bias"):
        out[f"final_layer.adaLN_modulation.1.{kind}"] = _swap(sd[f"norm_out.linear.{kind}"])
    return {DIT + k: v for k, v in out.items()}


def sd3_to_original(transformer: Any) -> dict[str, torch.Tensor]:
    sd = transformer.state_dict()
    out = {"pos_embed": sd["pos_embed.pos_embed"], "context_embedder.weight": sd["context_embedder.weight"],
           "context_embedder.bias": sd["context_embedder.bias"]}  # fmt: skip
    simple = {"pos_embed.proj": "x_embedder.proj", "time_text_embed.timestep_embedder.linear_1": "t_embedder.mlp.0",
              "time_text_embed.timestep_embedder.linear_2": "t_embedder.mlp.2",
              "time_text_embed.text_embedder.linear_1": "y_embedder.mlp.0",
              "time_text_embed.text_embedder.linear_2": "y_embedder.mlp.2", "proj_out": "final_layer.linear"}  # fmt: skip
    n = transformer.config.num_layers
    for i in range(n):
        b, o = f"transformer_blocks.{i}.", f"joint_blocks.{i}."
        simple.update({b + "attn.to_out.0": o + "x_block.attn.proj", b + "norm1.linear": o + "x_block.adaLN_modulation.1",
                       b + "ff.net.0.proj": o + "x_block.mlp.fc1", b + "ff.net.2": o + "x_block.mlp.fc2"})  # fmt: skip
        if i < n - 1:  # the last block's context stream ends before attention output (context_pre_only)
            simple.update({b + "attn.to_add_out": o + "context_block.attn.proj",
                           b + "norm1_context.linear": o + "context_block.adaLN_modulation.1",
                           b + "ff_context.net.0.proj": o + "context_block.mlp.fc1",
                           b + "ff_context.net.2": o + "context_block.mlp.fc2"})  # fmt: skip
        else:
            for kind in ("weight", "bias"):
                out[f"{o}context_block.adaLN_modulation.1.{kind}"] = _swap(sd[f"{b}norm1_context.linear.{kind}"])
        for kind in ("weight", "bias"):
            out[f"{o}x_block.attn.qkv.{kind}"] = _cat(sd, *(f"{b}attn.to_{p}.{kind}" for p in "qkv"))
            out[f"{o}context_block.attn.qkv.{kind}"] = _cat(sd, *(f"{b}attn.add_{p}_proj.{kind}" for p in "qkv"))
    return _finish(sd, out, simple)


def flux_to_original(transformer: Any) -> dict[str, torch.Tensor]:
    sd = transformer.state_dict()
    simple = {"time_text_embed.timestep_embedder.linear_1": "time_in.in_layer",
              "time_text_embed.timestep_embedder.linear_2": "time_in.out_layer",
              "time_text_embed.text_embedder.linear_1": "vector_in.in_layer",
              "time_text_embed.text_embedder.linear_2": "vector_in.out_layer",
              "time_text_embed.guidance_embedder.linear_1": "guidance_in.in_layer",
              "time_text_embed.guidance_embedder.linear_2": "guidance_in.out_layer",
              "context_embedder": "txt_in", "x_embedder": "img_in", "proj_out": "final_layer.linear"}  # fmt: skip
    out: dict[str, torch.Tensor] = {}
    for i in range(transformer.config.num_layers):
        b, o = f"transformer_blocks.{i}.", f"double_blocks.{i}."
        simple.update({b + "norm1.linear": o + "img_mod.lin", b + "norm1_context.linear": o + "txt_mod.lin",
                       b + "ff.net.0.proj": o + "img_mlp.0", b + "ff.net.2": o + "img_mlp.2",
                       b + "ff_context.net.0.proj": o + "txt_mlp.0", b + "ff_context.net.2": o + "txt_mlp.2",
                       b + "attn.to_out.0": o + "img_attn.proj", b + "attn.to_add_out": o + "txt_attn.proj"})  # fmt: skip
        norms = {"norm_q": "img_attn.norm.query_norm", "norm_k": "img_attn.norm.key_norm",
                 "norm_added_q": "txt_attn.norm.query_norm", "norm_added_k": "txt_attn.norm.key_norm"}  # fmt: skip
        for d, l in norms.items():
            out[f"{o}{l}.scale"] = sd[f"{b}attn.{d}.weight"]
        for kind in ("weight", "bias"):
            out[f"{o}img_attn.qkv.{kind}"] = _cat(sd, *(f"{b}attn.to_{p}.{kind}" for p in "qkv"))
            out[f"{o}txt_attn.qkv.{kind}"] = _cat(sd, *(f"{b}attn.add_{p}_proj.{kind}" for p in "qkv"))
    for i in range(transformer.config.num_single_layers):
        b, o = f"single_transformer_blocks.{i}.", f"single_blocks.{i}."
        simple.update({b + "norm.linear": o + "modulation.lin", b + "proj_out": o + "linear2"})
        out[f"{o}norm.query_norm.scale"] = sd[f"{b}attn.norm_q.weight"]
        out[f"{o}norm.key_norm.scale"] = sd[f"{b}attn.norm_k.weight"]
        for kind in ("weight", "bias"):
            out[f"{o}linear1.{kind}"] = _cat(sd, *(f"{b}attn.to_{p}.{kind}" for p in "qkv"), f"{b}proj_mlp.{kind}")
    return _finish(sd, out, simple)


def hf_text_to_original(text_encoder: Any, prefix: str) -> dict[str, torch.Tensor]:
    """CLIP and T5 keep Hugging Face's names in these files, under text_encoders.<name>.transformer."""
    out = {}
    for k, v in text_encoder.state_dict().items():
        if "clip" in prefix and not k.startswith(("text_model.", "text_projection")):
            k = "text_model." + k  # newer transformers drop that level in CLIPTextModel's state_dict
        out[prefix + k] = v
    return out


def flux_converter_any_width():
    """diffusers' Flux converter with the width read from the checkpoint: it assumes Flux.1's 3072 when it splits
    the single blocks' fused linear1, which only a full-size model satisfies. Everything else is diffusers' own."""
    from diffusers.loaders import single_file_utils

    src = inspect.getsource(single_file_utils.convert_flux_transformer_checkpoint_to_diffusers)
    assert "inner_dim = 3072" in src
    src = src.replace("inner_dim = 3072", 'inner_dim = checkpoint["img_in.weight"].shape[0]')
    scope = dict(vars(single_file_utils))
    exec(compile(src, single_file_utils.__file__, "exec"), scope)
    return scope["convert_flux_transformer_checkpoint_to_diffusers"]


def check_round_trip(transformer: Any, original: dict[str, torch.Tensor], convert) -> None:
    back = convert({k: v.clone() for k, v in original.items()})
    sd = transformer.state_dict()
    assert set(back) == set(sd), set(back) ^ set(sd)
    assert all(torch.equal(back[k], sd[k]) for k in sd)


def _tiny_configs(configs: Path, variant: str, parts: dict[str, Any]) -> None:
    """The bundled configs of `variant` with the tiny parts' shapes (scheduler, index and tokenizers stay real)."""
    from noisebrush.engine.paths import assets_dir

    real = assets_dir() / "configs"
    shutil.copytree(real / variant, configs / variant)
    for name in ("sd15", "t5-tokenizer"):  # the tokenizers the loader takes from the configs root
        if not (configs / name).exists():
            shutil.copytree(real / name, configs / name)
    for name, module in parts.items():
        if hasattr(module, "save_config"):
            module.save_config(configs / variant / name)
        else:
            module.config.save_pretrained(configs / variant / name)


def write_sd3_file(path: Path, configs: Path, folder: Path | None = None) -> Path:
    """A tiny SD3 checkpoint as sd3_medium_incl_clips ships: MMDiT, VAE, CLIP-L and CLIP-G, no T5. The two CLIPs
    differ in width (32, 48): diffusers tells them apart by it. `folder`: the same weights as a diffusers folder."""
    from diffusers import SD3Transformer2DModel
    from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers
    from ldm_export import vae_to_ldm
    from safetensors.torch import save_file
    from tiny_flow import _clip_config, tiny_vae16
    from transformers import CLIPTextModelWithProjection

    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=16, num_layers=2, attention_head_dim=8,
                                        num_attention_heads=4, joint_attention_dim=96, caption_projection_dim=32,
                                        pooled_projection_dim=80, out_channels=16, pos_embed_max_size=16)  # fmt: skip
    te1, te2 = CLIPTextModelWithProjection(_clip_config(32)), CLIPTextModelWithProjection(_clip_config(48))
    with torch.no_grad():  # SD3 files carry no CLIP-L projection: diffusers puts the identity there
        te1.text_projection.weight.copy_(torch.eye(32))
    vae = tiny_vae16(0.0609, 1.5305)
    original = sd3_to_original(transformer)
    check_round_trip(transformer, original, convert_sd3_transformer_checkpoint_to_diffusers)
    ckpt = {**original, **vae_to_ldm(vae), **hf_text_to_original(te1, "text_encoders.clip_l.transformer."),
            **hf_text_to_original(te2, "text_encoders.clip_g.transformer.")}  # fmt: skip
    save_file({k: v.detach().clone().contiguous() for k, v in ckpt.items()}, str(path))
    _tiny_configs(configs, "sd3", {"transformer": transformer, "vae": vae, "text_encoder": te1, "text_encoder_2": te2})
    if folder is not None:
        from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

        tok = _tokenizers(configs)
        StableDiffusion3Pipeline(
            transformer=transformer, vae=vae, text_encoder=te1, text_encoder_2=te2, text_encoder_3=None, tokenizer=tok[0],
            tokenizer_2=tok[1], tokenizer_3=None,
            scheduler=FlowMatchEulerDiscreteScheduler.from_pretrained(configs / "sd3" / "scheduler"),
        ).save_pretrained(folder)  # fmt: skip
    return path


def write_flux_file(path: Path, configs: Path, guidance: bool = True, folder: Path | None = None) -> Path:
    """A tiny Flux checkpoint as ComfyUI's all-in-one files are: transformer, VAE, CLIP-L and T5 (its vocabulary as
    big as the real one, so the bundled T5 tokenizer serves it)."""
    from diffusers import FluxTransformer2DModel
    from ldm_export import vae_to_ldm
    from safetensors.torch import save_file
    from tiny_flow import _clip_config, tiny_vae16
    from transformers import CLIPTextModel, T5Config, T5EncoderModel

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=64,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        guidance_embeds=guidance,
        axes_dims_rope=[4, 4, 8],
    )
    t5 = T5EncoderModel(T5Config(vocab_size=32128, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                                 decoder_start_token_id=0, feed_forward_proj="gated-gelu"))  # fmt: skip
    clip, vae = CLIPTextModel(_clip_config(32)), tiny_vae16(0.1159, 0.3611)
    original = flux_to_original(transformer)
    check_round_trip(transformer, original, flux_converter_any_width())
    ckpt = {**original, **vae_to_ldm(vae, "vae."), **hf_text_to_original(clip, "text_encoders.clip_l.transformer."),
            **hf_text_to_original(t5, "text_encoders.t5xxl.transformer.")}  # fmt: skip
    save_file({k: v.detach().clone().contiguous() for k, v in ckpt.items()}, str(path))
    variant = "flux-dev" if guidance else "flux-schnell"
    _tiny_configs(configs, variant, {"transformer": transformer, "vae": vae, "text_encoder": clip, "text_encoder_2": t5})
    if folder is not None:
        from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

        tok = _tokenizers(configs)
        FluxPipeline(
            transformer=transformer, vae=vae, text_encoder=clip, text_encoder_2=t5, tokenizer=tok[0], tokenizer_2=tok[2],
            scheduler=FlowMatchEulerDiscreteScheduler.from_pretrained(configs / variant / "scheduler"),
        ).save_pretrained(folder)  # fmt: skip
    return path


def _tokenizers(configs: Path) -> tuple:
    """CLIP-L, OpenCLIP-G (padded with "!") and T5, as the loader takes them from the bundled configs."""
    from transformers import T5TokenizerFast

    from noisebrush.engine.paths import clip_tokenizers

    clip = clip_tokenizers()
    return clip["tokenizer"], clip["tokenizer_2"], T5TokenizerFast.from_pretrained(configs / "t5-tokenizer")


def write_transformer_only(all_in_one: Path, path: Path, strip_prefix: bool) -> Path:
    """The transformer of an all-in-one file alone, as BFL ships flux1-dev.safetensors (no prefix) and Stability
    sd3.5_large.safetensors (model.diffusion_model.)."""
    from safetensors.torch import load_file, save_file

    tensors = {k: v for k, v in load_file(str(all_in_one)).items() if k.startswith(DIT)}
    save_file({(k.removeprefix(DIT) if strip_prefix else k): v for k, v in tensors.items()}, str(path))
    return path


def write_gguf(source: Path, path: Path, arch: str, qtype: str = "F16") -> Path:
    """A transformer-only file as city96's converter writes it: keys without the prefix, 1-D tensors in F32, the rest
    in `qtype`, falling back to F16 for a tensor whose shape the quantization cannot take."""
    import gguf
    from safetensors.torch import load_file

    writer = gguf.GGUFWriter(path=None, arch=arch)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for key, tensor in load_file(str(source)).items():
        data = tensor.float().numpy()
        kind = gguf.GGMLQuantizationType.F32 if data.ndim == 1 else gguf.GGMLQuantizationType[qtype]
        try:
            stored = gguf.quants.quantize(data, kind)
        except (gguf.QuantError, NotImplementedError):
            kind = gguf.GGMLQuantizationType.F16
            stored = gguf.quants.quantize(data, kind)
        writer.add_tensor(key.removeprefix(DIT), stored, raw_dtype=kind)
    writer.write_header_to_file(path=path)
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
