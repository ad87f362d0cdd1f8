"""References on the local diffusers backend: IP-Adapter's decoupled cross-attention, installed for one job.

An adapter's weights load once per model (`LoadedModel.ip_adapters`) into our own modules: its image projection
and a key/value pair per cross-attention layer. For a job with references, each cross-attention of the UNet gets a
processor that runs the model's own processor (plain, a LoRA'd one, or the regions' masked one) and adds what the
reference tokens give at that layer: Σ scale · mask · softmax(q·k_ipᵀ)·v_ip through the layer's output projection,
which is what diffusers' IPAdapterAttnProcessor adds before it (the projection is linear). After the job the old
processors are back, so no reference (or weight 0) runs exactly the model's own attention: the same picture, bit for
bit, and nothing unloads.

Modes choose the layers, after InstantStyle (Wang et al. 2024, "InstantStyle: Free Lunch towards Style-Preserving
in Text-to-Image Generation"; diffusers' IP-Adapter guide) and with the same numbers as the ComfyUI IPAdapter pack
(cubiq/ComfyUI_IPAdapter_plus 2.0.0, `ipadapter_execute`), so a reference looks alike on both backends:
- SDXL-shaped UNets (the lowest-resolution up block has attention): `up_blocks.0.attentions.1` carries style (colour,
  material, atmosphere), `down_blocks.2.attentions.1` layout; the pack's "style transfer" {6} and "composition" {3}.
- SD1.5-shaped UNets: composition is the lowest-resolution down block with attention (`down_blocks.2`: its second
  attention at full weight, its first at 0.25: the pack's {4: 0.25, 5: 1}); style is every other attention except the
  middle block and the first two of the lowest up block with attention (the pack's {0–3, 9–15}).
*Both* is the original IP-Adapter on every layer: style, composition and subject (the pack's "linear").
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import re
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from noisebrush.engine.composition import Reference
from noisebrush.engine.errors import UserError
from noisebrush.engine.ip_adapters import AdapterFiles

REFERENCE_FAMILIES = ("sd15", "sdxl")
_BLOCK = re.compile(r"^(down|up)_blocks\.(\d+)\.attentions\.(\d+)\.")


def cross_attention_names(unet: Any) -> list[str]:
    """The UNet's cross-attention processors, in the order h94's `ip_adapter.{1,3,5,…}` ids follow."""
    return [n for n in unet.attn_processors if not n.endswith("attn1.processor") and "motion_modules" not in n]


def mode_weights(names: list[str], declared: tuple[tuple[str, tuple[str, ...]], ...] = ()) -> dict[str, dict[str, float]]:
    """name → {"style": f, "composition": f, "both": 1.0}: how much of a reference's weight reaches each
    cross-attention layer in each mode (the module docstring says which layers and why). `declared`: the layer
    prefixes an adapter's maker measured per mode, which replace the rule for that mode (the embedded model's)."""
    out = _structural_weights(names)
    for mode, prefixes in declared:
        for n in names:
            out[n][mode] = 1.0 if n.startswith(prefixes) else 0.0
    return out


def _structural_weights(names: list[str]) -> dict[str, dict[str, float]]:
    units: list[tuple[str, int, int]] = []
    for n in names:
        m = _BLOCK.match(n)
        if m:
            units.append((m.group(1), int(m.group(2)), int(m.group(3))))
    ups = sorted({b for side, b, _ in units if side == "up"})
    downs = sorted({b for side, b, _ in units if side == "down"})
    low_down = downs[-1] if downs else None
    low_up = ups[0] if ups else None

    sdxl_like = low_up == 0  # SD1.5's up_blocks.0 has no attention; SDXL's has three

    def count(side: str, b: int | None) -> int:
        return len({a for s_, b_, a in units if (s_, b_) == (side, b)})

    def composition(side: str, b: int, a: int) -> float:
        if side != "down" or b != low_down:
            return 0.0
        return 1.0 if a == min(1, count("down", b) - 1) else (0.0 if sdxl_like else 0.25)

    def style(side: str, b: int, a: int) -> float:
        if sdxl_like:
            return 1.0 if (side, b, a) == ("up", low_up, min(1, count("up", low_up) - 1)) else 0.0
        return 0.0 if (side == "down" and b == low_down) or (side == "up" and b == low_up and a < 2) else 1.0

    out = {}
    for n in names:
        m = _BLOCK.match(n)
        key = (m.group(1), int(m.group(2)), int(m.group(3))) if m else None
        out[n] = {"style": style(*key) if key else 0.0, "composition": composition(*key) if key else 0.0, "both": 1.0}
    return out


@dataclass
class LoadedAdapter:
    files: AdapterFiles
    projection: Any  # diffusers' ImageProjection / IPAdapterPlusImageProjection
    layers: dict[str, tuple[Any, Any]]  # processor name → (to_k_ip, to_v_ip)
    encoder: Any  # CLIPVisionModelWithProjection
    image_size: int
    tokens: OrderedDict = field(default_factory=OrderedDict)  # picture digest → (negative, positive) tokens

    TOKEN_CACHE = 8  # live mode sends the same references frame after frame

    def encode(self, image: np.ndarray):
        """(negative, positive) image tokens, each (1, T, cross_dim), cached by the picture's bytes. The negative is
        what diffusers uses: the projection of zeros (plain) or of an all-black picture's features (plus)."""
        import torch

        key = hashlib.sha1(image.tobytes() + str(image.shape).encode()).hexdigest()
        if key in self.tokens:
            self.tokens.move_to_end(key)
            return self.tokens[key]
        from transformers import CLIPImageProcessor

        s = self.image_size
        processor = CLIPImageProcessor(size={"shortest_edge": s}, crop_size={"height": s, "width": s})
        param = next(self.encoder.parameters())
        pixels = processor(images=np.array(image), return_tensors="pt").pixel_values.to(param.device, param.dtype)
        with torch.inference_mode():
            if self.files.kind == "plain":
                pos = self.encoder(pixels).image_embeds
                neg = torch.zeros_like(pos)
            else:
                pos = self.encoder(pixels, output_hidden_states=True).hidden_states[-2]
                neg = self.encoder(torch.zeros_like(pixels), output_hidden_states=True).hidden_states[-2]
            out = (self.projection(neg), self.projection(pos))
        self.tokens[key] = out
        if len(self.tokens) > self.TOKEN_CACHE:
            self.tokens.popitem(last=False)
        return out


def load_adapter(files: AdapterFiles, unet: Any, device: str, dtype: Any) -> LoadedAdapter:
    """Read an adapter and its image encoder once; UserError when it does not fit this UNet."""
    import torch
    from safetensors.torch import load_file
    from transformers import CLIPVisionModelWithProjection

    if files.cross_dim != unet.config.cross_attention_dim:
        raise UserError(f"IP-Adapter {files.path.name} is made for {files.cross_dim}-wide cross-attention; this model's "
                        f"is {unet.config.cross_attention_dim}")  # fmt: skip
    names = cross_attention_names(unet)
    if len(names) != files.layers:
        raise UserError(f"IP-Adapter {files.path.name} has weights for {files.layers} cross-attention layers, this model "
                        f"has {len(names)}: it is made for another model")  # fmt: skip
    try:
        state = load_file(str(files.path))
    except Exception as exc:  # safetensors' own errors for a damaged body
        raise UserError(f"cannot read IP-Adapter {files.path.name}: {str(exc).splitlines()[0][:200]}") from None
    image_proj = {k.removeprefix("image_proj."): v for k, v in state.items() if k.startswith("image_proj.")}
    try:
        projection = unet._convert_ip_adapter_image_proj_to_diffusers(image_proj, low_cpu_mem_usage=False)
    except Exception as exc:  # a projection whose shapes contradict each other
        raise UserError(f"IP-Adapter {files.path.name}: its image projection is damaged ({str(exc)[:150]})") from None
    layers = {}
    modules = dict(unet.named_modules())
    for i, name in enumerate(names):
        attn = modules[name.removesuffix(".processor")]
        k_w, v_w = state[f"ip_adapter.{2 * i + 1}.to_k_ip.weight"], state[f"ip_adapter.{2 * i + 1}.to_v_ip.weight"]
        hidden = attn.to_k.out_features if hasattr(attn.to_k, "out_features") else attn.to_k.weight.shape[0]
        if tuple(k_w.shape) != (hidden, files.cross_dim) or k_w.shape != v_w.shape:
            raise UserError(f"IP-Adapter {files.path.name} does not fit this model (layer {name} is {hidden} wide, the "
                            f"adapter's {tuple(k_w.shape)})")  # fmt: skip
        pair = []
        for w in (k_w, v_w):
            lin = torch.nn.Linear(files.cross_dim, hidden, bias=False)
            lin.weight.data.copy_(w)
            pair.append(lin.to(device=device, dtype=dtype).eval())
        layers[name] = tuple(pair)
    try:
        encoder = CLIPVisionModelWithProjection.from_pretrained(files.encoder, dtype=dtype, local_files_only=True,
                                                                use_safetensors=True)  # fmt: skip
    except Exception as exc:
        raise UserError(f"cannot load the image encoder {files.encoder}: {str(exc).splitlines()[0][:200]}") from None
    return LoadedAdapter(files, projection.to(device=device, dtype=dtype).eval(), layers, encoder.to(device).eval(),
                         int(encoder.config.image_size))  # fmt: skip


class ReferenceJob:
    """The references of one job: their tokens, per-layer scales, masks, and where the sampler is (for start/end)."""

    def __init__(self, adapters: list[LoadedAdapter], refs: tuple[Reference, ...], names: list[str],
                 latent_hw: tuple[int, int], cfg: bool) -> None:  # fmt: skip
        import torch

        self.refs, self.adapters, self.latent_hw, self.cfg = refs, adapters, latent_hw, cfg
        self.tokens = [a.encode(r.image) for a, r in zip(adapters, refs)]
        weights = [mode_weights(names, a.files.mode_layers) for a in adapters]
        self.scales = {n: [r.weight * w[n][r.mode] for r, w in zip(refs, weights)] for n in names}
        self.masks = [None if r.mask is None else torch.from_numpy(r.mask.astype(np.float32) / 255.0) for r in refs]
        self._level_masks: dict[tuple, Any] = {}
        self.fraction = 0.0  # of the sampling done, set by the step callback

    def active(self, i: int) -> bool:
        r = self.refs[i]
        return r.start <= self.fraction < r.end or (r.end >= 1.0 and self.fraction >= r.start)

    def _mask(self, i: int, n: int, device, dtype):
        """Reference i's mask at the UNet level with n positions, (n, 1), area-averaged (a soft edge stays soft)."""
        import torch.nn.functional as F

        key = (i, n, str(device), str(dtype))
        if key not in self._level_masks:
            h, w = self.latent_hw
            for _ in range(8):
                if h * w == n:
                    break
                h, w = math.ceil(h / 2), math.ceil(w / 2)
            pooled = F.adaptive_avg_pool2d(self.masks[i][None, None], (h, w))[0, 0]
            self._level_masks[key] = pooled.reshape(-1, 1).to(device=device, dtype=dtype)
        return self._level_masks[key]

    def _batch_tokens(self, i: int, batch: int):
        import torch

        neg, pos = self.tokens[i]
        if self.cfg and batch % 2 == 0:  # the pipelines put the negative half first
            return torch.cat([neg.expand(batch // 2, -1, -1), pos.expand(batch // 2, -1, -1)])
        return pos.expand(batch, -1, -1)

    def delta(self, name: str, attn: Any, hidden_states: Any):
        """What the references add to the output of cross-attention layer `name` (None: nothing)."""
        import torch
        import torch.nn.functional as F

        scales = self.scales.get(name)
        live = [i for i, s in enumerate(scales or ()) if s > 0 and self.active(i)]
        if not live:
            return None
        batch, n, _ = hidden_states.shape
        q = attn.to_q(hidden_states)
        head_dim = q.shape[-1] // attn.heads
        q = q.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        acc = None
        for i in live:
            to_k, to_v = self.adapters[i].layers[name]
            tokens = self._batch_tokens(i, batch).to(q.dtype)
            k, v = (t(tokens).view(batch, -1, attn.heads, head_dim).transpose(1, 2) for t in (to_k, to_v))
            out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, n, -1) * scales[i]
            if self.masks[i] is not None:
                out = out * self._mask(i, n, out.device, out.dtype)
            acc = out if acc is None else acc + out
        proj = attn.to_out[0]
        # the projection is linear: W·(a + b) + bias = (W·a + bias) + W·b; a LoRA on it counts through proj too
        return (proj(acc) - proj(torch.zeros_like(acc[:, :1]))) / attn.rescale_output_factor


class ReferenceAttnProcessor:
    def __init__(self, job: ReferenceJob, name: str, original: Any) -> None:
        self.job, self.name, self.original = job, name, original

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs):
        out = self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        if encoder_hidden_states is None or hidden_states.ndim != 3:
            return out
        delta = self.job.delta(self.name, attn, hidden_states)
        return out if delta is None else out + delta


@contextlib.contextmanager
def installed(unet: Any, job: ReferenceJob) -> Iterator[None]:
    """Reference processors on the UNet's cross-attentions for the `with` block only (over whatever is there: a
    region processor keeps working under it). ControlNets read the text alone, as in diffusers."""
    old = unet.attn_processors
    wrapped = {n: ReferenceAttnProcessor(job, n, p) if n in job.scales else p for n, p in old.items()}
    unet.set_attn_processor(wrapped)
    try:
        yield
    finally:
        unet.set_attn_processor(old)
