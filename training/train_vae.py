"""Train the embedded model's AutoencoderKL (f=8, 4 latent channels) on the procedural world.

    python -m training.train_vae [--config training/configs/vae.json] [key=value ...]

Resumes from <out_dir>/state.pt when present. Trains on random crops: the VAE is
fully convolutional, and crops cost a quarter of the compute of whole images.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import AutoencoderKL

from training.common import LossLog, load_state, save_state, start_run, to_tensor
from training.world import generate


def build_vae(cfg: dict) -> AutoencoderKL:
    n = len(cfg["block_out_channels"])
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * n,
        up_block_types=["UpDecoderBlock2D"] * n,
        block_out_channels=cfg["block_out_channels"],
        layers_per_block=cfg["layers_per_block"],
        latent_channels=cfg["latent_channels"],
        norm_num_groups=32,
        sample_size=cfg["image_size"],
    )


def batch(rng: np.random.Generator, cfg: dict) -> torch.Tensor:
    size, crop = cfg["image_size"], cfg["crop"]
    out = np.empty((cfg["batch_size"], crop, crop, 3), np.uint8)
    for i in range(cfg["batch_size"]):
        img = generate(rng, size).image
        y, x = rng.integers(0, size - crop + 1, 2)
        out[i] = img[y : y + crop, x : x + crop]
    return to_tensor(out)


def main() -> None:
    cfg, out = start_run("training/configs/vae.json")
    state = load_state(out)
    vae = AutoencoderKL.from_pretrained(out / "model") if state else build_vae(cfg)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg["lr"], weight_decay=0.0)
    start = 0
    if state:
        opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        start = state["step"]
        print(f"resumed at step {start}")
    rng = np.random.default_rng(cfg["seed"] * 1000 + start)
    log = LossLog(out)
    vae.train()
    for step in range(start + 1, cfg["steps"] + 1):
        x = batch(rng, cfg)
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample()).sample
        loss = (rec - x).pow(2).mean() + 0.2 * (rec - x).abs().mean() + cfg["kl_weight"] * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        log.add(step, loss.item())
        if step % cfg["save_every"] == 0 or step == cfg["steps"]:
            vae.save_pretrained(out / "model")
            save_state(out, step, opt)
    # The latent scale makes the diffusion model see unit-variance latents, as SD's 0.18215 does.
    with torch.no_grad():
        rng = np.random.default_rng(12345)
        imgs = np.stack([generate(rng, cfg["image_size"]).image for _ in range(64)])
        z = vae.encode(to_tensor(imgs)).latent_dist.mode()
    vae.register_to_config(scaling_factor=float(1.0 / z.std()))
    vae.save_pretrained(out / "model")
    print(f"done; scaling_factor={1.0 / z.std():.5f}")


if __name__ == "__main__":
    main()
