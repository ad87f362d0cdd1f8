"""Regions on the local diffusers backend: masked cross-attention, one UNet pass a step, not one per region.

The text side is one long sequence: the background's prompt tokens, then each region's (engine/composition.py
says which words each holds). Every cross-attention layer gets a processor that adds -10000 to the score of a
token wherever its region's mask is not, at that layer's resolution (the mask max-pooled down, as InvokeAI does, so
a thin region survives the 8x-smaller levels). exp(-10000) is exactly 0 in float32: a region's words have no weight
outside it. The fast path gets the same result at about the cost of one prompt: a position that may attend one
block only attends just that block's tokens (the others' weights are exactly 0 anyway), and only the border
positions where pooled masks meet take the masked softmax over every token. Self-attention keeps the model's own
processor. With classifier-free guidance the negative half of the
batch is masked the same way over each block's negative prompt: where all blocks share the whole-picture negative
this attends exactly like that negative alone (each position sees one copy of it).

Installed on the UNet and the ControlNets for one job and put back after (`installed`), so nothing reloads.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import numpy as np

NEG = -10000.0


class RegionMasks:
    """The additive attention bias per sequence length (one per UNet level), built on first use and cached.
    blocks: each text block's (tokens, weight HxW at latent size); None weight = attends everywhere."""

    def __init__(self, blocks: list[tuple[int, np.ndarray | None]], latent_hw: tuple[int, int]) -> None:
        import torch

        self.latent_hw = latent_hw
        self.tokens = sum(n for n, _ in blocks)
        self._blocks = [(n, None if w is None else torch.from_numpy(np.ascontiguousarray(w, np.float32))) for n, w in blocks]
        self._cache: dict[tuple, object] = {}
        self.record: list | None = None  # tests: (n, attention probabilities) per call
        self.exact = False  # tests: the masked softmax over every token instead of the per-block fast path

    def _level(self, n: int) -> tuple[int, int]:
        """The (h, w) of a layer whose image sequence is n long: the latent halved until it fits (ceil, as convs do)."""
        h, w = self.latent_hw
        for _ in range(8):
            if h * w == n:
                return h, w
            h, w = math.ceil(h / 2), math.ceil(w / 2)
        raise ValueError(f"no UNet level has {n} positions for a {self.latent_hw} latent")

    def allowed(self, n: int):
        """(n, blocks) bool: which blocks' tokens each image position may attend at the level with n positions."""
        import torch
        import torch.nn.functional as F

        key = (n, "allowed", None)
        if key not in self._cache:
            h, w = self._level(n)
            cols = []
            for _tokens, weight in self._blocks:
                if weight is None:
                    cols.append(torch.ones(n, dtype=torch.bool))
                    continue
                # max-pool: a position any part of the region touches attends it
                pooled = F.adaptive_max_pool2d(weight[None, None], (h, w))[0, 0] if weight.shape != (h, w) else weight
                cols.append(pooled.reshape(-1) > 0.5 / 255)
            self._cache[key] = torch.stack(cols, dim=1)
        return self._cache[key]

    def bias(self, n: int, dtype, device):
        """(n, tokens) additive bias: 0 where a token may be attended, NEG where not."""
        import torch

        key = (n, str(dtype), device)
        if key not in self._cache:
            per_token = torch.repeat_interleave(self.allowed(n), torch.tensor([t for t, _ in self._blocks]), dim=1)
            self._cache[key] = torch.where(per_token, 0.0, NEG).to(device=device, dtype=dtype)
        return self._cache[key]

    def groups(self, n: int, device):
        """Positions that attend one block only, by block ((block, token slice, position index)), and the rest
        (borders where blocks meet after pooling, or none): the fast path runs each group on its own tokens."""
        import torch

        key = (n, "groups", device)
        if key not in self._cache:
            allowed = self.allowed(n)
            single = allowed.sum(dim=1) == 1
            starts = [0]
            for tokens, _ in self._blocks:
                starts.append(starts[-1] + tokens)
            out = []
            for b in range(len(self._blocks)):
                idx = torch.nonzero(single & allowed[:, b]).flatten().to(device)
                if len(idx):
                    out.append((slice(starts[b], starts[b + 1]), idx))
            self._cache[key] = (out, torch.nonzero(~single).flatten().to(device))
        return self._cache[key]


class RegionAttnProcessor:
    """Cross-attention with the region bias (both halves of a CFG batch: each block has its own negative);
    self-attention as before."""

    def __init__(self, masks: RegionMasks, original) -> None:
        self.masks, self.original = masks, original

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs):
        if encoder_hidden_states is None or encoder_hidden_states.shape[1] != self.masks.tokens:
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        import torch

        residual = hidden_states
        if hidden_states.ndim == 4:  # a ControlNet's or old UNet's attention may see (B, C, H, W)
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        batch, n, _ = hidden_states.shape
        if attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        q, k, v = attn.to_q(hidden_states), attn.to_k(encoder_hidden_states), attn.to_v(encoder_hidden_states)
        head_dim = k.shape[-1] // attn.heads
        q, k, v = (t.view(batch, -1, attn.heads, head_dim).transpose(1, 2) for t in (q, k, v))
        if self.masks.record is not None or self.masks.exact:  # every score, for tests
            bias = self.masks.bias(n, q.dtype, q.device)[None, None]  # the same for every head and batch row
            probs = torch.softmax(q @ k.transpose(-1, -2) * attn.scale + bias, dim=-1)
            if self.masks.record is not None:
                self.masks.record.append((n, probs.detach().float().cpu()))
            out = probs @ v
        else:
            out = self._by_block(q, k, v, n, attn.scale)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(q.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if residual.ndim == 4:
            out = out.transpose(-1, -2).reshape(residual.shape)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor

    def _by_block(self, q, k, v, n: int, scale: float):
        """The same result as the masked softmax over all tokens, at about the cost of one prompt: a position that
        attends one block only sees just that block's tokens (the others' weights would be exactly 0); only border
        positions, where pooled masks meet, take the masked softmax over every token."""
        import torch
        import torch.nn.functional as F

        out = torch.empty_like(q)
        single, rest = self.masks.groups(n, q.device)
        for tokens, idx in single:
            out[:, :, idx] = F.scaled_dot_product_attention(q[:, :, idx], k[:, :, tokens], v[:, :, tokens], scale=scale)
        if len(rest):
            bias = self.masks.bias(n, q.dtype, q.device)[rest][None, None]
            out[:, :, rest] = F.scaled_dot_product_attention(q[:, :, rest], k, v, attn_mask=bias, scale=scale)
        return out


@contextlib.contextmanager
def installed(models: list, masks: RegionMasks) -> Iterator[None]:
    """Region processors on every attention of `models` (UNet, ControlNets) for the `with` block only."""
    saved = []
    try:
        for model in models:
            old = model.attn_processors
            saved.append((model, old))
            model.set_attn_processor({name: RegionAttnProcessor(masks, proc) for name, proc in old.items()})
        yield
    finally:
        for model, old in saved:
            model.set_attn_processor(old)
