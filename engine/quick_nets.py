"""The embedded model's networks in plain torch, for the quick start (engine/quick_start.py).

Importing diffusers and transformers costs about 4 s on a 2-core laptop (torch._dynamo alone about 1 s, pulled in by
their model classes), longer than the rest of a first frame. These modules load the same safetensors files under
the same parameter names (load_state_dict is strict) and do the same operations in the same order as diffusers'
UNet2DConditionModel, ControlNetModel and AutoencoderKL decoder and transformers' BertModel, for the configurations
the embedded model uses; tests/test_quick_start.py holds them to diffusers' output. Nothing else runs on them.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

Config = dict[str, Any]


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """diffusers' get_timestep_embedding with flip_sin_to_cos=True, downscale_freq_shift=0."""
    half = dim // 2
    exponent = -math.log(10000) * torch.arange(0, half, dtype=torch.float32, device=t.device) / half
    emb = t[:, None].float() * torch.exp(exponent)[None, :]
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=-1)
    return torch.cat([emb[:, half:], emb[:, :half]], dim=-1)


class TimestepEmbedding(nn.Module):
    def __init__(self, dim: int, out: int) -> None:
        super().__init__()
        self.linear_1, self.linear_2 = nn.Linear(dim, out), nn.Linear(out, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class Resnet(nn.Module):
    def __init__(self, cin: int, cout: int, temb: int | None, groups: int, eps: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=eps)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb, cout) if temb else None
        self.norm2 = nn.GroupNorm(groups, cout, eps=eps)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        if self.time_emb_proj is not None:
            h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return x + h


class Attention(nn.Module):
    """diffusers' Attention with AttnProcessor2_0: no q/k/v bias, 8 heads (the UNet), or the VAE's one-head
    attention with biases, its own group norm and a residual."""

    def __init__(self, dim: int, heads: int, context: int | None = None, vae: bool = False) -> None:
        super().__init__()
        self.heads, self.vae = heads, vae
        if vae:
            self.group_norm = nn.GroupNorm(32, dim, eps=1e-6)
        self.to_q = nn.Linear(dim, dim, bias=vae)
        self.to_k = nn.Linear(context or dim, dim, bias=vae)
        self.to_v = nn.Linear(context or dim, dim, bias=vae)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim), nn.Dropout(0.0)])

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        residual, shape = x, x.shape
        if self.vae:
            b, c, h, w = shape
            x = self.group_norm(x.view(b, c, h * w)).transpose(1, 2)
        context = x if context is None else context
        b = x.shape[0]
        q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
        d = k.shape[-1] // self.heads
        q, k, v = (y.view(b, -1, self.heads, d).transpose(1, 2) for y in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, -1, self.heads * d)
        out = self.to_out[0](out)
        if self.vae:
            out = out.transpose(-1, -2).reshape(shape) + residual
        return out


class GEGLU(nn.Module):
    def __init__(self, dim: int, inner: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, inner * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, gate = self.proj(x).chunk(2, dim=-1)
        return h * F.gelu(gate)


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, context: int) -> None:
        super().__init__()
        self.norm1, self.attn1 = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm2, self.attn2 = nn.LayerNorm(dim), Attention(dim, heads, context)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = nn.Module()
        self.ff.net = nn.ModuleList([GEGLU(dim, dim * 4), nn.Dropout(0.0), nn.Linear(dim * 4, dim)])

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), context) + x
        ff = self.ff.net
        return ff[2](ff[0](self.norm3(x))) + x


class Transformer2D(nn.Module):
    def __init__(self, dim: int, heads: int, context: int, groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, dim, eps=1e-6)
        self.proj_in = nn.Conv2d(dim, dim, 1)
        self.transformer_blocks = nn.ModuleList([TransformerBlock(dim, heads, context)])
        self.proj_out = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.proj_in(self.norm(x)).permute(0, 2, 3, 1).reshape(b, h * w, c)
        for block in self.transformer_blocks:
            y = block(y, context)
        y = y.reshape(b, h, w, c).permute(0, 3, 1, 2).contiguous()
        return self.proj_out(y) + x


class Sampler(nn.Module):
    """Downsample2D (stride-2 conv) or Upsample2D (nearest ×2 to the skip's size, then a conv)."""

    def __init__(self, dim: int, down: bool) -> None:
        super().__init__()
        self.down = down
        self.conv = nn.Conv2d(dim, dim, 3, stride=2 if down else 1, padding=1)

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        if not self.down:
            if x.shape[0] >= 64:
                x = x.contiguous()
            x = F.interpolate(x, scale_factor=2.0, mode="nearest") if size is None else F.interpolate(x, size=size)
        return self.conv(x)


def _block(resnets: list, attentions: list | None, sampler: Sampler | None) -> nn.Module:
    block = nn.Module()
    block.resnets = nn.ModuleList(resnets)
    if attentions is not None:
        block.attentions = nn.ModuleList(attentions)
    if sampler is not None:
        setattr(block, "downsamplers" if sampler.down else "upsamplers", nn.ModuleList([sampler]))
    return block


class UNetEncoder(nn.Module):
    """What UNet2DConditionModel and ControlNetModel share: the time embedding, conv_in, the down and mid blocks."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        ch = cfg["block_out_channels"]
        heads, groups, ctx, temb = cfg["attention_head_dim"], cfg["norm_num_groups"], cfg["cross_attention_dim"], ch[0] * 4
        self.groups, self.eps = groups, cfg["norm_eps"]
        self.time_embedding = TimestepEmbedding(ch[0], temb)
        self.conv_in = nn.Conv2d(cfg["in_channels"], ch[0], 3, padding=1)
        blocks, cin = [], ch[0]
        for i, cout in enumerate(ch):
            last = i == len(ch) - 1
            n = cfg["layers_per_block"]
            blocks.append(_block([Resnet(cin if j == 0 else cout, cout, temb, groups, self.eps) for j in range(n)],
                                 [Transformer2D(cout, heads, ctx, groups) for _ in range(n)],
                                 None if last else Sampler(cout, down=True)))  # fmt: skip
            cin = cout
        self.down_blocks = nn.ModuleList(blocks)
        self.mid_block = _block([Resnet(ch[-1], ch[-1], temb, groups, self.eps) for _ in range(2)],
                                [Transformer2D(ch[-1], heads, ctx, groups)], None)  # fmt: skip

    def embed(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t.reshape(-1).to(x.device).expand(x.shape[0])
        return self.time_embedding(timestep_embedding(t, self.conv_in.out_channels).to(x.dtype))

    def encode(self, x: torch.Tensor, temb: torch.Tensor, context: torch.Tensor) -> tuple[list, torch.Tensor]:
        skips = [x]
        for block in self.down_blocks:
            for resnet, attn in zip(block.resnets, block.attentions):
                x = attn(resnet(x, temb), context)
                skips.append(x)
            if hasattr(block, "downsamplers"):
                x = block.downsamplers[0](x)
                skips.append(x)
        mid = self.mid_block
        x = mid.resnets[1](mid.attentions[0](mid.resnets[0](x, temb), context), temb)
        return skips, x


class UNet(UNetEncoder):
    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        ch, n = cfg["block_out_channels"], cfg["layers_per_block"] + 1
        heads, groups, ctx, temb = cfg["attention_head_dim"], self.groups, cfg["cross_attention_dim"], ch[0] * 4
        rev, blocks = list(reversed(ch)), []
        for i, cout in enumerate(rev):
            prev, skip_in = rev[max(i - 1, 0)], rev[min(i + 1, len(ch) - 1)]
            resnets = [Resnet((prev if j == 0 else cout) + (skip_in if j == n - 1 else cout), cout, temb, groups, self.eps)
                       for j in range(n)]  # fmt: skip
            last = i == len(ch) - 1
            blocks.append(_block(resnets, [Transformer2D(cout, heads, ctx, groups) for _ in range(n)],
                                 None if last else Sampler(cout, down=False)))  # fmt: skip
        self.up_blocks = nn.ModuleList(blocks)
        self.conv_norm_out = nn.GroupNorm(groups, ch[0], eps=self.eps)
        self.conv_out = nn.Conv2d(ch[0], cfg["out_channels"], 3, padding=1)

    def forward(self, x, t, context, down_residuals=None, mid_residual=None) -> torch.Tensor:
        upsample_sized = any(s % 2 ** (len(self.up_blocks) - 1) != 0 for s in x.shape[-2:])
        temb = self.embed(x, t)
        skips, x = self.encode(self.conv_in(x), temb, context)
        if down_residuals is not None:
            skips = [s + r for s, r in zip(skips, down_residuals)]
            x = x + mid_residual
        for block in self.up_blocks:
            mine, skips = skips[-len(block.resnets) :], skips[: -len(block.resnets)]
            for resnet, attn in zip(block.resnets, block.attentions):
                x = attn(resnet(torch.cat([x, mine.pop()], dim=1), temb), context)
            if hasattr(block, "upsamplers"):
                x = block.upsamplers[0](x, tuple(skips[-1].shape[2:]) if upsample_sized else None)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


class ControlNet(UNetEncoder):
    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        ch, emb = cfg["block_out_channels"], cfg["conditioning_embedding_out_channels"]
        cond = nn.Module()
        cond.conv_in = nn.Conv2d(cfg.get("conditioning_channels", 3), emb[0], 3, padding=1)
        cond.blocks = nn.ModuleList()
        for a, b in zip(emb[:-1], emb[1:]):
            cond.blocks.extend([nn.Conv2d(a, a, 3, padding=1), nn.Conv2d(a, b, 3, padding=1, stride=2)])
        cond.conv_out = nn.Conv2d(emb[-1], ch[0], 3, padding=1)
        self.controlnet_cond_embedding = cond
        outs = [ch[0]] + [c for i, c in enumerate(ch) for _ in range(cfg["layers_per_block"] + (i < len(ch) - 1))]
        self.controlnet_down_blocks = nn.ModuleList(nn.Conv2d(c, c, 1) for c in outs)
        self.controlnet_mid_block = nn.Conv2d(ch[-1], ch[-1], 1)

    def forward(self, x, t, context, image: torch.Tensor, scale: float) -> tuple[list, torch.Tensor]:
        temb = self.embed(x, t)
        cond = self.controlnet_cond_embedding
        c = F.silu(cond.conv_in(image))
        for conv in cond.blocks:
            c = F.silu(conv(c))
        skips, mid = self.encode(self.conv_in(x) + cond.conv_out(c), temb, context)
        down = [proj(s) * scale for proj, s in zip(self.controlnet_down_blocks, skips)]
        return down, self.controlnet_mid_block(mid) * scale


class Decoder(nn.Module):
    """AutoencoderKL's post_quant_conv and decoder (the `decoder.*` keys); latents in, pixels in [-1, 1] out."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        ch, lat, n = list(reversed(cfg["block_out_channels"])), cfg["latent_channels"], cfg["layers_per_block"] + 1
        g = cfg["norm_num_groups"]
        self.post_quant_conv = nn.Conv2d(lat, lat, 1)
        dec = self.decoder = nn.Module()
        dec.conv_in = nn.Conv2d(lat, ch[0], 3, padding=1)
        dec.mid_block = _block([Resnet(ch[0], ch[0], None, g, 1e-6) for _ in range(2)], [Attention(ch[0], 1, vae=True)], None)
        blocks = []
        for i, cout in enumerate(ch):
            cin = ch[max(i - 1, 0)]
            last = i == len(ch) - 1
            blocks.append(_block([Resnet(cin if j == 0 else cout, cout, None, g, 1e-6) for j in range(n)], None,
                                 None if last else Sampler(cout, down=False)))  # fmt: skip
        dec.up_blocks = nn.ModuleList(blocks)
        dec.conv_norm_out = nn.GroupNorm(g, ch[-1], eps=1e-6)
        dec.conv_out = nn.Conv2d(ch[-1], cfg["out_channels"], 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        dec = self.decoder
        x = dec.conv_in(self.post_quant_conv(z))
        mid = dec.mid_block
        x = mid.resnets[1](mid.attentions[0](mid.resnets[0](x)))
        for block in dec.up_blocks:
            for resnet in block.resnets:
                x = resnet(x)
            if hasattr(block, "upsamplers"):
                x = block.upsamplers[0](x)
        return dec.conv_out(F.silu(dec.conv_norm_out(x)))


class Bert(nn.Module):
    """transformers' BertModel without a pooler, attention over every token (the pipeline passes no mask)."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        d, eps = cfg["hidden_size"], cfg["layer_norm_eps"]
        self.heads = cfg["num_attention_heads"]
        emb = self.embeddings = nn.Module()
        emb.word_embeddings = nn.Embedding(cfg["vocab_size"], d)
        emb.position_embeddings = nn.Embedding(cfg["max_position_embeddings"], d)
        emb.token_type_embeddings = nn.Embedding(cfg["type_vocab_size"], d)
        emb.LayerNorm = nn.LayerNorm(d, eps=eps)
        layers = []
        for _ in range(cfg["num_hidden_layers"]):
            layer = nn.Module()
            layer.attention = nn.Module()
            layer.attention.self = nn.Module()
            for name in ("query", "key", "value"):
                setattr(layer.attention.self, name, nn.Linear(d, d))
            layer.attention.output = _dense_norm(d, d, eps)
            layer.intermediate = nn.Module()
            layer.intermediate.dense = nn.Linear(d, cfg["intermediate_size"])
            layer.output = _dense_norm(cfg["intermediate_size"], d, eps)
            layers.append(layer)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList(layers)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        emb = self.embeddings
        positions = torch.arange(ids.shape[1], device=ids.device)[None]
        x = emb.word_embeddings(ids) + emb.token_type_embeddings(torch.zeros_like(ids))
        x = emb.LayerNorm(x + emb.position_embeddings(positions))
        b, n, d = x.shape
        for layer in self.encoder.layer:
            att = layer.attention.self
            q, k, v = (m(x).view(b, n, self.heads, -1).transpose(1, 2) for m in (att.query, att.key, att.value))
            a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
            out = layer.attention.output
            x = out.LayerNorm(out.dense(a) + x)
            h = F.gelu(layer.intermediate.dense(x))
            x = layer.output.LayerNorm(layer.output.dense(h) + x)
        return x


def _dense_norm(cin: int, cout: int, eps: float) -> nn.Module:
    m = nn.Module()
    m.dense, m.LayerNorm = nn.Linear(cin, cout), nn.LayerNorm(cout, eps=eps)
    return m
