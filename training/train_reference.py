"""Train the embedded model's reference adapter: an IP-Adapter in h94's layout, so references work the moment the
app opens (no download), through the same code as SD1.5's and SDXL's.

    python -m training.train_reference [--steps 1500] [--out runs/reference] [--export assets/models/default/ip-adapter]

The embedded UNet, VAE and MiniLM stay frozen. What learns: a small CLIP vision encoder (no pretrained one can be
downloaded here, and the world has ten colours, not ImageNet), the image projection (4 tokens of 384) and one
key/value pair per cross-attention layer, started from that layer's own text key/value. The reference is the
training picture itself, randomly cropped and flipped (so it carries colours and look more than exact layout),
while the caption loses its colour words most of the time: the colours must come from the picture.

Held out: no landscape scene is ever drawn (shapes and figures only). For the honest colour figure, a run with
`--hold-out purple,orange` draws no picture holding those colours anywhere; bench/reference_colours.py then says
whether references in colours the adapter never saw are followed (they were not: see the model card). The adapter
shipped in assets/models/default/ip-adapter/ is trained with every colour (`--hold-out ""`).
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from diffusers.models.embeddings import ImageProjection
from safetensors.torch import save_file
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

from noisebrush.engine.paths import default_model_dir
from noisebrush.engine.reference_attention import cross_attention_names
from training.train_diffusion import NOISE_SCHEDULE, encode_text
from training.world import COLOR_NAMES, generate

HELD_OUT_COLOURS = ("purple", "orange")  # the held-out experiment's (--hold-out purple,orange)
TRAIN_KINDS = ("shapes", "figure")  # landscapes held out
ENCODER = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_hidden_layers=2, image_size=64,
               patch_size=8, projection_dim=64)  # fmt: skip
# Which layers carry what in the embedded UNet, measured on this adapter (one layer on at a time, a red and a blue
# reference, "a circle", seeds 1 and 2, 12 steps: how much closer the mean colour came to the reference's, summed
# over R, G, B): up_blocks.1.attentions.1 alone gives +153/+337 and +147/+154 where all layers give +166/+344 and
# +145/+148; no other layer passes +50 on both. So Style is that layer (InstantStyle's SDXL rule would pick
# up_blocks.0.attentions.1 here, which moves colour by under 20). Composition keeps the structural rule.
STYLE_LAYERS = ("up_blocks.1.attentions.1",)
_COLOUR_WORDS = re.compile(r"\b(" + "|".join(COLOR_NAMES) + r")\b\s*")


def strip_colours(caption: str) -> str:
    return " ".join(_COLOUR_WORDS.sub("", caption).split())


def draw_pool(n: int, seed: int, held_out: tuple[str, ...] = ()) -> tuple[np.ndarray, list[str]]:
    """n world pictures (128 px) with no held-out colour anywhere, and their captions."""
    rng = np.random.default_rng(seed)
    images, captions = [], []
    while len(images) < n:
        s = generate(rng, 128, str(rng.choice(TRAIN_KINDS)))
        colours = {o.color for o in s.objects} | ({s.background} if s.background else set())
        if colours & set(held_out) or any(c in s.caption for c in held_out):
            continue
        images.append(s.image)
        captions.append(s.caption)
    return np.stack(images), captions


class Tokens:
    """The batch's reference tokens, shared by every training processor."""

    value: torch.Tensor | None = None


class TrainAttn(torch.nn.Module):
    """The model's attention plus the reference's, the same sum engine/reference_attention.py computes."""

    def __init__(self, original, tokens: Tokens, hidden: int, cross: int, to_k: torch.nn.Linear, to_v: torch.nn.Linear):
        super().__init__()
        self.original, self.tokens = original, tokens
        self.to_k_ip = torch.nn.Linear(cross, hidden, bias=False)
        self.to_v_ip = torch.nn.Linear(cross, hidden, bias=False)
        with torch.no_grad():  # start from the text's own projections: image tokens look like words at first
            self.to_k_ip.weight.copy_(to_k.weight)
            self.to_v_ip.weight.copy_(to_v.weight)

    def forward(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        out = self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        if encoder_hidden_states is None or self.tokens.value is None:
            return out
        b, n, _ = hidden_states.shape
        q = attn.to_q(hidden_states)
        d = q.shape[-1] // attn.heads
        q = q.view(b, -1, attn.heads, d).transpose(1, 2)
        k, v = (t(self.tokens.value).view(b, -1, attn.heads, d).transpose(1, 2) for t in (self.to_k_ip, self.to_v_ip))
        ip = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, -1)
        proj = attn.to_out[0]
        return out + (proj(ip) - proj(torch.zeros_like(ip[:, :1]))) / attn.rescale_output_factor


def augment(images: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    out = []
    for img in images:
        s = int(rng.integers(72, 129))
        y, x = rng.integers(0, 129 - s, size=2)
        crop = img[y : y + s, x : x + s]
        out.append(np.ascontiguousarray(crop[:, ::-1] if rng.random() < 0.5 else crop))
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--pool", type=int, default=3000)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--out", default="runs/reference")
    p.add_argument("--export", default="")
    p.add_argument("--hold-out", default="", help="colours no training picture may hold, comma-separated")
    args = p.parse_args()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    folder = default_model_dir()
    unet = UNet2DConditionModel.from_pretrained(folder / "unet").eval().requires_grad_(False)
    vae = AutoencoderKL.from_pretrained(folder / "vae").eval().requires_grad_(False)
    sched = DDPMScheduler(**NOISE_SCHEDULE)
    images, captions = draw_pool(args.pool, seed=1, held_out=tuple(c for c in args.hold_out.split(",") if c))
    with torch.no_grad():
        latents = torch.cat([vae.encode(torch.from_numpy(images[i : i + 64]).permute(0, 3, 1, 2).float() / 127.5 - 1)
                             .latent_dist.mean for i in range(0, len(images), 64)]) * vae.config.scaling_factor  # fmt: skip
        texts = {c: None for c in captions + [strip_colours(c) for c in captions] + [""]}
        keys = list(texts)
        embeds = torch.cat([encode_text(keys[i : i + 256]) for i in range(0, len(keys), 256)])
        text_of = {k: embeds[i] for i, k in enumerate(keys)}
    cross = unet.config.cross_attention_dim
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**ENCODER))
    projection = ImageProjection(cross_attention_dim=cross, image_embed_dim=ENCODER["projection_dim"], num_image_text_embeds=4)
    tokens = Tokens()
    modules = dict(unet.named_modules())
    names = cross_attention_names(unet)
    procs = dict(unet.attn_processors)
    layers = {}
    for name in names:
        attn = modules[name.removesuffix(".processor")]
        layers[name] = procs[name] = TrainAttn(procs[name], tokens, attn.to_k.out_features, cross, attn.to_k, attn.to_v)
    unet.set_attn_processor(procs)
    params = [*encoder.parameters(), *projection.parameters(), *(p for m in layers.values() for p in m.parameters())]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-4)
    processor = CLIPImageProcessor(size={"shortest_edge": ENCODER["image_size"]},
                                   crop_size={"height": ENCODER["image_size"], "width": ENCODER["image_size"]})  # fmt: skip
    log, t0 = [], time.time()
    for step in range(args.steps):
        idx = rng.integers(0, len(images), args.batch)
        pixels = processor(images=augment(images[idx], rng), return_tensors="pt").pixel_values
        embeds = encoder(pixels).image_embeds
        drop = torch.from_numpy(rng.random(args.batch) < 0.05)  # sometimes no reference: the zero embedding, as at CFG
        embeds = torch.where(drop[:, None], torch.zeros_like(embeds), embeds)
        tokens.value = projection(embeds)
        roll = rng.random(args.batch)  # mostly no colour words: the picture must say them
        chosen = [captions[i] if r < 0.15 else "" if r < 0.3 else strip_colours(captions[i]) for i, r in zip(idx, roll)]
        text = torch.stack([text_of[c] for c in chosen])
        x0 = latents[idx]
        noise = torch.randn_like(x0)
        t = torch.randint(0, 1000, (args.batch,))
        pred = unet(sched.add_noise(x0, noise, t), t, encoder_hidden_states=text).sample
        loss = F.mse_loss(pred, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        log.append(float(loss.detach()))
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step} loss {np.mean(log[-100:]):.4f} ({time.time() - t0:.0f} s)", flush=True)
    (out / "loss.json").write_text(json.dumps(log))
    export(Path(args.export) if args.export else out / "ip-adapter", encoder, projection, layers, names)


def export(folder: Path, encoder, projection, layers: dict, names: list[str]) -> None:
    """h94's layout and keys: `ip-adapter_noisebrush.safetensors` and `image_encoder/` beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    # fp16 on disk (the engine loads at its own dtype): with fp32 the embedded model went past its 60 MB budget
    encoder.to(torch.float16).save_pretrained(folder / "image_encoder", safe_serialization=True)
    encoder.to(torch.float32)
    state = {"image_proj.proj.weight": projection.image_embeds.weight, "image_proj.proj.bias": projection.image_embeds.bias,
             "image_proj.norm.weight": projection.norm.weight, "image_proj.norm.bias": projection.norm.bias}  # fmt: skip
    for i, name in enumerate(names):
        state[f"ip_adapter.{2 * i + 1}.to_k_ip.weight"] = layers[name].to_k_ip.weight
        state[f"ip_adapter.{2 * i + 1}.to_v_ip.weight"] = layers[name].to_v_ip.weight
    half = {k: v.detach().to(torch.float16).contiguous().clone() for k, v in state.items()}
    save_file(half, str(folder / "ip-adapter_noisebrush.safetensors"),
              metadata={"noisebrush.style_layers": ",".join(STYLE_LAYERS)})  # fmt: skip
    print(f"wrote {folder}")


if __name__ == "__main__":
    main()
