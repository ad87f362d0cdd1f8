"""Write tiny diffusers models as original-layout (LDM) single-file checkpoints, the layout from_single_file reads.

The inverse of diffusers' convert_ldm_unet/vae/clip/controlnet_checkpoint, for the block layouts the tests use.
"""

from __future__ import annotations

import re

import torch

RESNET = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"), ("conv2", "out_layers.3"),
          ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection")]  # fmt: skip
UNET_LAYERS = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
               "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
               "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2"}  # fmt: skip


def _resnet(rest: str) -> str:
    for new, old in RESNET:
        if rest.startswith(new + "."):
            return old + rest[len(new) :]
    return rest


def _unet_key(k: str, lpb: int, up_attn: set[int]) -> str:
    for d, l in UNET_LAYERS.items():
        if k.startswith(d + "."):
            return l + k[len(d) :]
    if m := re.match(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", k):
        b, j, rest = int(m[1]), int(m[2]), m[3]
        return f"input_blocks.{(lpb + 1) * b + j + 1}.0.{_resnet(rest)}"
    if m := re.match(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.*)", k):
        return f"input_blocks.{(lpb + 1) * int(m[1]) + int(m[2]) + 1}.1.{m[3]}"
    if m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", k):
        return f"input_blocks.{(lpb + 1) * (int(m[1]) + 1)}.0.op.{m[2]}"
    if m := re.match(r"mid_block\.resnets\.(\d+)\.(.*)", k):
        return f"middle_block.{2 * int(m[1])}.{_resnet(m[2])}"
    if m := re.match(r"mid_block\.attentions\.0\.(.*)", k):
        return f"middle_block.1.{m[1]}"
    if m := re.match(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", k):
        return f"output_blocks.{(lpb + 1) * int(m[1]) + int(m[2])}.0.{_resnet(m[3])}"
    if m := re.match(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.*)", k):
        return f"output_blocks.{(lpb + 1) * int(m[1]) + int(m[2])}.1.{m[3]}"
    if m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", k):
        b = int(m[1])
        return f"output_blocks.{(lpb + 1) * b + lpb}.{2 if b in up_attn else 1}.conv.{m[2]}"
    raise KeyError(k)


def unet_to_ldm(unet, prefix: str = "model.diffusion_model.") -> dict[str, torch.Tensor]:
    cfg = unet.config
    up_attn = {i for i, t in enumerate(cfg.up_block_types) if "CrossAttn" in t}
    return {prefix + _unet_key(k, cfg.layers_per_block, up_attn): v for k, v in unet.state_dict().items()}


def controlnet_to_ldm(net, prefix: str = "control_model.") -> dict[str, torch.Tensor]:
    cfg = net.config
    out = {}
    for k, v in net.state_dict().items():
        if m := re.match(r"controlnet_down_blocks\.(\d+)\.(.*)", k):
            key = f"zero_convs.{m[1]}.0.{m[2]}"
        elif k.startswith("controlnet_mid_block."):
            key = "middle_block_out.0." + k.split(".", 1)[1]
        elif k.startswith("controlnet_cond_embedding.conv_in."):
            key = "input_hint_block.0." + k.rsplit(".", 1)[1]
        elif k.startswith("controlnet_cond_embedding.conv_out."):
            key = "input_hint_block.14." + k.rsplit(".", 1)[1]
        elif m := re.match(r"controlnet_cond_embedding\.blocks\.(\d+)\.(.*)", k):
            key = f"input_hint_block.{2 * (int(m[1]) + 1)}.{m[2]}"
        else:
            key = _unet_key(k, cfg.layers_per_block, set())
        out[prefix + key] = v
    return out


def _vae_key(k: str, n_up: int) -> str:
    k = k.replace("conv_norm_out", "norm_out")
    if m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*)", k):
        rest = m[2].replace("group_norm", "norm").replace("to_q", "q").replace("to_k", "k").replace("to_v", "v")
        return f"{m[1]}.mid.attn_1.{rest.replace('to_out.0', 'proj_out')}"
    if m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)", k):
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"
    if m := re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", k):
        return f"encoder.down.{m[1]}.block.{m[2]}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"
    if m := re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", k):
        return f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
    if m := re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", k):
        return f"decoder.up.{n_up - 1 - int(m[1])}.block.{m[2]}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"
    if m := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", k):
        return f"decoder.up.{n_up - 1 - int(m[1])}.upsample.conv.{m[2]}"
    return k


def vae_to_ldm(vae, prefix: str = "first_stage_model.") -> dict[str, torch.Tensor]:
    n_up = len(vae.config.up_block_types)
    out = {}
    for k, v in vae.state_dict().items():
        key = _vae_key(k, n_up)
        if ".mid.attn_1." in key and key.endswith("weight") and v.dim() == 2:
            v = v[:, :, None, None]  # LDM stores these as 1×1 convolutions
        out[prefix + key] = v
    return out


def open_clip_to_ldm(text_encoder, prefix: str = "conditioner.embedders.1.model.") -> dict[str, torch.Tensor]:
    """A CLIPTextModelWithProjection in OpenCLIP's layout (SDXL's second text encoder): q/k/v fused, projection transposed."""
    sd = {
        k if k.startswith(("text_model.", "text_projection")) else "text_model." + k: v
        for k, v in text_encoder.state_dict().items()
    }
    out = {
        prefix + "token_embedding.weight": sd["text_model.embeddings.token_embedding.weight"],
        prefix + "positional_embedding": sd["text_model.embeddings.position_embedding.weight"],
        prefix + "ln_final.weight": sd["text_model.final_layer_norm.weight"],
        prefix + "ln_final.bias": sd["text_model.final_layer_norm.bias"],
        prefix + "text_projection": sd["text_projection.weight"].T.contiguous(),
    }
    names = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
             "self_attn.out_proj": "attn.out_proj"}  # fmt: skip
    for i in range(text_encoder.config.num_hidden_layers):
        src, dst = f"text_model.encoder.layers.{i}.", f"{prefix}transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[dst + f"attn.in_proj_{kind}"] = torch.cat([sd[src + f"self_attn.{p}_proj.{kind}"] for p in "qkv"])
            for hf, oc in names.items():
                out[dst + f"{oc}.{kind}"] = sd[src + f"{hf}.{kind}"]
    return out


def clip_to_ldm(text_encoder, prefix: str = "cond_stage_model.transformer.") -> dict[str, torch.Tensor]:
    """SD checkpoints keep HF's CLIP names under `text_model.` (newer transformers drop that level in state_dict)."""
    return {prefix + (k if k.startswith("text_model.") else "text_model." + k): v for k, v in text_encoder.state_dict().items()}
