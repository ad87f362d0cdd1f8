"""Token grounding: teach cross-attention which shape each caption phrase belongs to.

Plain denoising learns to bind "a red star and a blue square" to the right shapes only slowly, because a swap
costs few pixels. The grounding loss (as in TokenCompose, Wang et al. 2024) works on the attention maps instead:
the attention a phrase's tokens ("red", "star") draw over the image should fall inside that object's mask.
It is a training-only aid; inference runs the stock diffusers attention.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
from diffusers.models.attention_processor import Attention

from training.world import COLOR_NAMES, SHAPE_WORDS, Sample

MAX_OBJECTS = 3
# "a red star", "an orange round shape": a palette colour then one of the shape words, as world._describe writes
_WORDS = sorted({w for ws in SHAPE_WORDS.values() for w in ws}, key=len, reverse=True)
_PHRASE = re.compile(rf"\b({'|'.join(COLOR_NAMES)}) ({'|'.join(_WORDS)})\b")


class GroundedAttention:
    """Cross-attention that also keeps its attention map (heads averaged) in `maps`.

    Computes what diffusers' AttnProcessor computes for a transformer block's cross-attention (no norms,
    no residual, no mask), with the probabilities made explicit.
    """

    def __init__(self, maps: list[torch.Tensor]) -> None:
        self.maps = maps

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None, attention_mask=None,
                 temb=None, **kwargs) -> torch.Tensor:  # fmt: skip
        q = attn.head_to_batch_dim(attn.to_q(hidden_states))
        k = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))
        v = attn.head_to_batch_dim(attn.to_v(encoder_hidden_states))
        probs = attn.get_attention_scores(q, k, None)
        self.maps.append(probs.view(hidden_states.shape[0], attn.heads, *probs.shape[1:]).mean(1))
        out = attn.batch_to_head_dim(torch.bmm(probs, v))
        return attn.to_out[1](attn.to_out[0](out))


def record_cross_attention(model: torch.nn.Module, maps: list[torch.Tensor]) -> int:
    """Swap every cross-attention (attn2) of a UNet or ControlNet for a recording one; returns how many."""
    procs = dict(model.attn_processors)
    cross = [name for name in procs if name.endswith("attn2.processor")]
    for name in cross:
        attn = model.get_submodule(name.removesuffix(".processor"))
        if attn.spatial_norm is not None or attn.group_norm is not None or attn.norm_cross or attn.residual_connection:
            raise ValueError(f"{name}: grounding expects a plain transformer-block cross-attention")
        procs[name] = GroundedAttention(maps)
    model.set_attn_processor(procs)
    return len(cross)


def phrase_targets(sample: Sample, tokenizer: Callable, lat_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per shape (up to MAX_OBJECTS): its visible mask at latent size, and the caption tokens of its phrase.

    Shapes appear in the caption in the order of `sample.objects`; a shape with no phrase or no visible pixels
    gets no tokens, so it adds nothing to the loss.
    """
    n_tok = tokenizer.model_max_length
    masks = np.zeros((MAX_OBJECTS, lat_size, lat_size), np.float16)
    tokens = np.zeros((MAX_OBJECTS, n_tok), bool)
    enc = tokenizer(sample.caption, padding="max_length", truncation=True, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    shapes = [o for o in sample.objects if o.kind in SHAPE_WORDS]
    phrases = [m.span() for m in _PHRASE.finditer(sample.caption)]
    for i, (obj, (a, b)) in enumerate(zip(shapes[:MAX_OBJECTS], phrases)):
        cover = cv2.resize(obj.mask.astype(np.float32), (lat_size, lat_size), interpolation=cv2.INTER_AREA)
        if cover.sum() < 0.5:
            continue
        masks[i] = cover
        tokens[i] = [e > s and s < b and e > a for s, e in offsets]
    return masks, tokens


def build_targets(path: Path, samples: Callable[[], list[Sample]], tokenizer: Callable, lat_size: int) -> dict:
    """phrase_targets of a pool's samples, cached in `path` (regenerating the seeded samples is cheap)."""
    if path.exists():
        return dict(np.load(path))
    pairs = [phrase_targets(s, tokenizer, lat_size) for s in samples()]
    out = {"masks": np.stack([p[0] for p in pairs]), "tokens": np.stack([p[1] for p in pairs])}
    np.savez(path, **out)
    return out


def grounding_loss(maps: list[torch.Tensor], masks: torch.Tensor, tokens: torch.Tensor, min_res: int = 8) -> torch.Tensor:
    """Mean over layers, shapes and phrase tokens of (1 − share of the token's attention inside its shape)².

    maps: per cross-attention layer, (B, pixels, tokens) attention probabilities of the grounded samples;
    masks: (B, K, h, w) soft shape masks at the largest map's size; tokens: (B, K, tokens) bool.
    Layers coarser than min_res are skipped: a shape there covers a cell or less.
    """
    tok = tokens.float()
    terms = []
    for a in maps:
        res = int(round(a.shape[1] ** 0.5))
        if res < min_res:
            continue
        m = torch.nn.functional.adaptive_avg_pool2d(masks, res).flatten(2)  # (B, K, P)
        inside = torch.einsum("bkp,bpl->bkl", m, a)
        share = inside / a.sum(1, keepdim=True).clamp_min(1e-8)
        terms.append(((1 - share) ** 2 * tok).sum() / tok.sum().clamp_min(1.0))
    return torch.stack(terms).mean() if terms else masks.new_zeros(())
