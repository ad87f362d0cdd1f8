"""Train the embedded model's UNet jointly with one ControlNet per control kind.

    python -m training.train_diffusion [--config training/configs/diffusion.json] [key=value ...]

Each batch is split between the control kinds (and a share with no control, so
plain text-to-image works too): every step updates the UNet and all three
ControlNets. Latents and caption embeddings of a fixed pool of world samples are
computed once and cached, so a step is only the UNet and ControlNet passes.
Resumes from <out_dir>/state.pt.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, ControlNetModel, DDPMScheduler, UNet2DConditionModel

from engine.text_encoder import load_minilm
from training.common import LossLog, load_state, save_state, start_run, to_tensor
from training.world import generate

KINDS = ("scribble", "depth", "pose")
# SD1.5's noise schedule, so every diffusers scheduler configured like SD's works unchanged.
NOISE_SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


def build_unet(cfg: dict, latent_size: int) -> UNet2DConditionModel:
    u = cfg["unet"]
    return UNet2DConditionModel(
        sample_size=latent_size,
        in_channels=4,
        out_channels=4,
        layers_per_block=u["layers_per_block"],
        block_out_channels=tuple(u["block_out_channels"]),
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (len(u["block_out_channels"]) - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (len(u["block_out_channels"]) - 1) + ("UpBlock2D",),
        cross_attention_dim=384,
        attention_head_dim=u["attention_head_dim"],
        norm_num_groups=u["norm_num_groups"],
    )


@torch.no_grad()
def encode_text(captions: list[str]) -> torch.Tensor:
    """Exactly what the diffusers pipeline does: pad to model_max_length, no attention mask, last hidden state."""
    tokenizer, encoder = load_minilm()
    ids = tokenizer(
        captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    return encoder(ids)[0]


@torch.no_grad()
def build_pool(cfg: dict, vae: AutoencoderKL, path: Path) -> dict[str, np.ndarray]:
    if path.exists():
        return dict(np.load(path))
    rng = np.random.default_rng(cfg["seed"])
    n, size = cfg["pool_size"], cfg["image_size"]
    sf = vae.config.scaling_factor
    lat_size = size // 8
    pool = {
        "latents": np.empty((n, 4, lat_size, lat_size), np.float16),
        "emb": np.empty((n, cfg["max_text_tokens"], 384), np.float16),
        "scribble": np.empty((n, size, size), np.uint8),
        "depth": np.empty((n, size, size), np.uint8),
        "pose": np.empty((n, size, size, 3), np.uint8),
        "has_person": np.empty(n, bool),
    }
    chunk = 64
    for start in range(0, n, chunk):
        samples = [generate(rng, size) for _ in range(min(chunk, n - start))]
        sl = slice(start, start + len(samples))
        imgs = to_tensor(np.stack([s.image for s in samples]))
        pool["latents"][sl] = (vae.encode(imgs).latent_dist.mean * sf).numpy()
        pool["emb"][sl] = encode_text([s.caption for s in samples]).numpy()
        pool["scribble"][sl] = np.stack([s.scribble[..., 0] for s in samples])
        pool["depth"][sl] = np.stack([s.depth[..., 0] for s in samples])
        pool["pose"][sl] = np.stack([s.pose for s in samples])
        pool["has_person"][sl] = [bool(s.people) for s in samples]
        if start % 2048 == 0:
            print(f"pool {start}/{n}", flush=True)
    np.savez(path, **pool)
    return pool


def control_tensor(pool: dict, kind: str, idx: np.ndarray) -> torch.Tensor:
    if kind == "pose":
        arr = pool["pose"][idx]
    else:
        arr = np.repeat(pool[kind][idx][..., None], 3, axis=3)
    # ControlNets take control images in [0, 1], as the pipeline's image processor gives them.
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div(255.0)


def main() -> None:
    cfg, out = start_run("training/configs/diffusion.json")

    vae = AutoencoderKL.from_pretrained(cfg["vae_dir"]).eval()
    pool = build_pool(cfg, vae, out / "pool.npz")
    n = len(pool["latents"])
    person_idx = np.flatnonzero(pool["has_person"])
    empty_emb = encode_text([""])[0]

    state = load_state(out)
    lat = cfg["image_size"] // 8
    if state:
        unet = UNet2DConditionModel.from_pretrained(out / "unet")
        nets = {k: ControlNetModel.from_pretrained(out / f"controlnet-{k}") for k in KINDS}
    elif cfg.get("init_from"):  # warm start from an exported model (e.g. assets/models/default) on a new machine
        src = Path(cfg["init_from"])
        unet = UNet2DConditionModel.from_pretrained(src / "unet", torch_dtype=torch.float32)
        nets = {k: ControlNetModel.from_pretrained(src / "controlnets" / k, torch_dtype=torch.float32) for k in KINDS}
        print(f"warm start from {src}")
    else:
        unet = build_unet(cfg, lat)
        nets = {
            k: ControlNetModel.from_unet(
                unet, conditioning_embedding_out_channels=tuple(cfg["conditioning_embedding_out_channels"])
            )
            for k in KINDS
        }
    modules = torch.nn.ModuleDict({"unet": unet, **{f"cn_{k}": v for k, v in nets.items()}})
    ema = copy.deepcopy(modules).requires_grad_(False)
    opt = torch.optim.AdamW(modules.parameters(), lr=cfg["lr"], weight_decay=1e-2)
    start = 0
    if state:
        opt.load_state_dict(state["optimizer"])
        ema.load_state_dict(state["ema"])
        torch.set_rng_state(state["rng"])
        start = state["step"]
        print(f"resumed at step {start}")
    sched = DDPMScheduler(**NOISE_SCHEDULE)
    alphas = sched.alphas_cumprod
    snr = alphas / (1 - alphas)
    rng = np.random.default_rng(cfg["seed"] * 7919 + start)
    log = LossLog(out)
    counts = {k: int(round(cfg["mix"][k] * cfg["batch_size"])) for k in (*KINDS, "none")}
    modules.train()
    for step in range(start + 1, cfg["steps"] + 1):
        lr = cfg["lr"] * min(1.0, step / cfg["warmup"])
        for g in opt.param_groups:
            g["lr"] = lr
        groups: list[tuple[str, np.ndarray]] = []
        for kind, c in counts.items():
            src = person_idx if kind == "pose" else n
            groups.append((kind, rng.choice(src, size=c)))
        idx = np.concatenate([g[1] for g in groups])
        x0 = torch.from_numpy(pool["latents"][idx].astype(np.float32))
        emb = torch.from_numpy(pool["emb"][idx].astype(np.float32))
        drop = torch.from_numpy(rng.random(len(idx)) < cfg["caption_dropout"])
        emb[drop] = empty_emb
        noise = torch.randn_like(x0)
        t = torch.randint(0, sched.config.num_train_timesteps, (len(idx),))
        xt = sched.add_noise(x0, noise, t)
        down_res: list[torch.Tensor] | None = None
        mid_res = None
        offset = 0
        for kind, gi in groups:
            sl = slice(offset, offset + len(gi))
            offset += len(gi)
            if kind == "none":
                continue
            cond = control_tensor(pool, kind, gi)
            d, m = nets[kind](xt[sl], t[sl], emb[sl], cond, return_dict=False)
            if down_res is None:
                down_res = [torch.zeros((len(idx),) + r.shape[1:]) for r in d]
                mid_res = torch.zeros((len(idx),) + m.shape[1:])
            down_res = [full.index_put((torch.arange(sl.start, sl.stop),), r) for full, r in zip(down_res, d)]
            mid_res = mid_res.index_put((torch.arange(sl.start, sl.stop),), m)
        pred = unet(xt, t, emb, down_block_additional_residuals=down_res, mid_block_additional_residual=mid_res).sample
        weight = torch.clamp(snr[t], max=cfg["min_snr_gamma"]) / snr[t]  # min-SNR weighting, epsilon target
        loss = (F.mse_loss(pred, noise, reduction="none").mean(dim=(1, 2, 3)) * weight).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(modules.parameters(), 1.0)
        opt.step()
        decay = min(cfg["ema_decay"], (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), modules.parameters()):
                pe.lerp_(pm, 1 - decay)
        if not math.isfinite(loss.item()):
            raise SystemExit(f"loss became {loss.item()} at step {step}")
        log.add(step, loss.item())
        if step % cfg["save_every"] == 0 or step == cfg["steps"]:
            unet.save_pretrained(out / "unet")
            for k, net in nets.items():
                net.save_pretrained(out / f"controlnet-{k}")
            ema["unet"].save_pretrained(out / "ema" / "unet")
            for k in KINDS:
                ema[f"cn_{k}"].save_pretrained(out / "ema" / f"controlnet-{k}")
            save_state(out, step, opt, {"ema": ema.state_dict()})


if __name__ == "__main__":
    main()
