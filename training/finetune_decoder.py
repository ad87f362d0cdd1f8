"""Sharpen the VAE's decoder on whole images, with the encoder frozen.

    python -m training.finetune_decoder [--config training/configs/decoder.json] [key=value ...]

The latents stay exactly what the diffusion model was trained on (the encoder does not
change), so this can run after the UNet is trained. An edge term (image gradients)
rewards crisp outlines, which the scribble metric reads.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import AutoencoderKL

from noisebrush.engine.decode_margin import add_vae_margin
from training.common import LossLog, load_state, save_state, start_run, to_tensor
from training.world import generate


def gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x[..., 1:, :] - x[..., :-1, :], x[..., :, 1:] - x[..., :, :-1]


def corner_weights(size: int, weight: float, reach: int = 24) -> torch.Tensor:
    """1 everywhere, 1 + weight within `reach` px of a corner. The decoder put a blob 10 px from the bottom-right
    corner of every picture (one massive activation in up_blocks.2's upsampler); spread over a whole picture's
    loss, those few pixels were too cheap to fix (bench/corner_blob.py)."""
    near = torch.zeros(size, dtype=torch.bool)
    near[:reach] = near[-reach:] = True
    return 1.0 + weight * (near[:, None] & near[None, :]).float()


def watch_spikes(vae: AutoencoderKL, threshold: float) -> list[torch.Tensor]:
    """Each decode's excess over `threshold` in up_blocks.2's upsampler output, where the blob's massive activation
    (120 against a 99th percentile of 20 on a flat latent) starts; penalising it takes the blob's cause away."""
    found: list[torch.Tensor] = []
    vae.decoder.up_blocks[2].upsamplers[0].register_forward_hook(
        lambda _m, _i, out: found.append(torch.relu(out.abs() - threshold).flatten(1).sum(1).mean())
    )
    return found


def flat_pictures(rng: np.random.Generator, n: int, size: int) -> torch.Tensor:
    """n pictures of one random colour each: the decoder should give each back flat. Decoded from latents alone
    (no UNet), the old decoder put a ring near the bottom-right corner of these (bench/corner_ring.py)."""
    colours = rng.integers(0, 256, (n, 1, 1, 3)).astype(np.uint8)
    return to_tensor(np.broadcast_to(colours, (n, size, size, 3)).copy())


def flatness(rec: torch.Tensor) -> torch.Tensor:
    """How far each pixel of a decoded flat picture strays from that picture's median colour."""
    median = rec.flatten(2).median(dim=2).values[..., None, None].detach()
    return (rec - median).abs().mean()


def main() -> None:
    cfg, out = start_run("training/configs/decoder.json")
    state = load_state(out)
    vae = AutoencoderKL.from_pretrained(out / "model" if state else cfg["vae_dir"])
    vae.requires_grad_(False)
    # Trained through the margin the app will decode with (noisebrush.json's "decode_margin"), so the decoder learns
    # to park its variance spike in it and to draw the picture's own bottom and right edges from padded latents.
    add_vae_margin(vae, cfg.get("decode_margin", 0))
    params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=0.0)
    start = 0
    if state:
        opt.load_state_dict(state["optimizer"])
        start = state["step"]
        print(f"resumed at step {start}")
    rng = np.random.default_rng(cfg["seed"] * 1000 + start)
    log = LossLog(out)
    weights = corner_weights(cfg["image_size"], cfg.get("corner_weight", 0.0))
    spikes = watch_spikes(vae, cfg["spike_threshold"]) if cfg.get("spike_weight") else []
    vae.encoder.eval()
    vae.decoder.train()
    for step in range(start + 1, cfg["steps"] + 1):
        x = to_tensor(np.stack([generate(rng, cfg["image_size"]).image for _ in range(cfg["batch_size"])]))
        with torch.no_grad():
            z = vae.encode(x).latent_dist.mode()
        spikes.clear()
        rec = vae.decode(z).sample
        (gy, gx), (ry, rx) = gradients(x), gradients(rec)
        edge = (gy - ry).abs().mean() + (gx - rx).abs().mean()
        w = weights / weights.mean()
        loss = ((rec - x).pow(2) * w).mean() + 0.2 * ((rec - x).abs() * w).mean() + cfg["edge_weight"] * edge
        if spikes:
            loss = loss + cfg["spike_weight"] * spikes[-1]
        if cfg.get("flat_weight"):
            with torch.no_grad():
                zf = vae.encode(flat_pictures(rng, cfg.get("flat_batch", 4), cfg["image_size"])).latent_dist.mode()
            loss = loss + cfg["flat_weight"] * flatness(vae.decode(zf).sample)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        log.add(step, loss.item(), **({"spike": spikes[-1].item()} if spikes else {}))
        if step % cfg["save_every"] == 0 or step == cfg["steps"]:
            vae.save_pretrained(out / "model")
            save_state(out, step, opt)


if __name__ == "__main__":
    main()
