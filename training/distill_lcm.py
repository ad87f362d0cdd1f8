"""Latent consistency distillation of the embedded model: a LoRA on its UNet that samples in 4 steps.

    python -m training.distill_lcm [--config training/configs/distill-lcm.json] [key=value ...]

The method is LCM-LoRA's (Luo et al. 2023, "Latent Consistency Models" and "LCM-LoRA"; diffusers'
examples/consistency_distillation/train_lcm_distill_lora_sd.py): the teacher is the shipped UNet and its
ControlNets with classifier-free guidance at the app's default (CFG 5); one DDIM step of it over k = 20 of the
1000 training steps gives the point the student must map to the same x0 as from where it started. The student
is the same UNet with a LoRA; the ControlNets stay frozen and feed both. The target is the student itself
without gradients (LCM-LoRA's choice: no EMA copy). diffusers' LCMScheduler samples the result with guidance
1 (the guidance is distilled in), so each step costs one UNet pass instead of two.
"""

from __future__ import annotations

import copy
import time

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, ControlNetModel, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel

from training.common import LossLog, load_state, save_state, start_run
from training.train_diffusion import (
    KINDS,
    NOISE_SCHEDULE,
    controlnet_residuals,
    encode_text,
    learning_rate,
    load_pools,
    phase_setting,
    rows,
)

# LoRA targets: every attention and feed-forward projection and every conv of the ResNet blocks (LCM-LoRA's set)
TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2", "conv1", "conv2",
           "conv_shortcut", "time_emb_proj"]  # fmt: skip


def boundary_scalings(t: torch.Tensor, sigma_data: float = 0.5, timestep_scaling: float = 10.0):
    """c_skip, c_out of the consistency function f(x, t) = c_skip x + c_out x0(x, t), as LCMScheduler has them."""
    scaled = t * timestep_scaling
    c_skip = sigma_data**2 / (scaled**2 + sigma_data**2)
    c_out = scaled / (scaled**2 + sigma_data**2) ** 0.5
    return c_skip, c_out


def expand(v: torch.Tensor) -> torch.Tensor:
    return v[:, None, None, None]


class Solver:
    """The DDIM grid LCM trains and samples on: N steps of k = 1000 / N, t_n = n k - 1."""

    def __init__(self, alphas_cumprod: torch.Tensor, n: int = 50) -> None:
        self.k = 1000 // n
        self.timesteps = torch.arange(1, n + 1) * self.k - 1
        self.alpha = alphas_cumprod.sqrt()
        self.sigma = (1 - alphas_cumprod).sqrt()

    def x0(self, eps: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return (x - expand(self.sigma[t]) * eps) / expand(self.alpha[t])

    def step(self, x0: torch.Tensor, eps: torch.Tensor, t_prev: torch.Tensor) -> torch.Tensor:
        """One DDIM step to t_prev (t_prev = -1 means the clean end: alpha 1 at t 0 is close enough)."""
        t_prev = t_prev.clamp(min=0)
        return expand(self.alpha[t_prev]) * x0 + expand(self.sigma[t_prev]) * eps


def save_lora(student: UNet2DConditionModel, folder) -> None:
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(student))
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers={k: v.half() for k, v in layers.items()})


def main() -> None:
    from peft import LoraConfig

    cfg, out = start_run("training/configs/distill-lcm.json")
    vae = AutoencoderKL.from_pretrained(f"{cfg['teacher']}/vae", torch_dtype=torch.float32).eval()
    pool_np, _, _ = load_pools(cfg, vae, out)
    pool = {k: torch.from_numpy(v) for k, v in pool_np.items()}
    n = len(pool["latents"])
    person_idx = np.flatnonzero(pool_np["has_person"])
    del pool_np
    teacher = UNet2DConditionModel.from_pretrained(f"{cfg['teacher']}/unet", torch_dtype=torch.float32).eval()
    teacher.requires_grad_(False)
    nets = {k: ControlNetModel.from_pretrained(f"{cfg['teacher']}/controlnets/{k}", torch_dtype=torch.float32).eval()
            for k in KINDS}  # fmt: skip
    for net in nets.values():
        net.requires_grad_(False)
    student = copy.deepcopy(teacher)
    student.add_adapter(LoraConfig(r=cfg["rank"], lora_alpha=cfg["rank"], init_lora_weights="gaussian",
                                   target_modules=TARGETS))  # fmt: skip
    params = [p for p in student.parameters() if p.requires_grad]
    print(f"LoRA rank {cfg['rank']}: {sum(p.numel() for p in params) / 1e6:.2f} M parameters")
    opt = torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=0.0)
    state = load_state(out)
    start = 0
    if state:
        student.load_state_dict(state["student"], strict=False)
        opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        start = state["step"]
        print(f"resumed at step {start}")
    solver = Solver(DDPMScheduler(**NOISE_SCHEDULE).alphas_cumprod, cfg["ddim_steps"])
    uncond = encode_text([""])[0]
    w = cfg["guidance"] - 1.0  # LCM's w: x0_c + w (x0_c - x0_u) is CFG at scale w + 1
    rng = np.random.default_rng(cfg["seed"] * 7919 + start)
    log = LossLog(out, cfg.get("log_every", 10))
    student.train()
    t_run, budget = time.time(), cfg.get("time_budget_s")
    step = start
    while step < cfg["steps"]:
        step += 1
        if budget and time.time() - t_run > budget:
            cfg["steps"] = step  # save and stop
        for g in opt.param_groups:
            g["lr"] = learning_rate(cfg, step)
        groups = []
        for kind, share in phase_setting(cfg, step, "mix", cfg["mix"]).items():
            c = int(round(share * cfg["batch_size"]))
            groups.append((kind, rng.choice(person_idx if kind == "pose" else n, size=c)))
        idx = np.concatenate([g[1] for g in groups])
        x0 = rows(pool["latents"], idx).float()
        emb = rows(pool["emb"], idx).float()
        b = len(idx)
        index = torch.from_numpy(rng.integers(0, len(solver.timesteps), b))
        t = solver.timesteps[index]
        t_prev = t - solver.k
        noise = torch.randn_like(x0)
        xt = expand(solver.alpha[t]) * x0 + expand(solver.sigma[t]) * noise
        c_skip, c_out = (expand(v) for v in boundary_scalings(t.float()))
        c_skip_prev, c_out_prev = (expand(v) for v in boundary_scalings(t_prev.clamp(min=0).float()))

        with torch.no_grad():  # the ControlNets are frozen
            res = controlnet_residuals(nets, groups, pool, xt, t, emb)
        eps = student(xt, t, emb, **res).sample
        pred = c_skip * xt + c_out * solver.x0(eps, t, xt)
        with torch.no_grad():
            eps_c = teacher(xt, t, emb, **res).sample
            none = uncond.expand(b, -1, -1)
            eps_u = teacher(xt, t, none, **controlnet_residuals(nets, groups, pool, xt, t, none)).sample
            x0_c, x0_u = solver.x0(eps_c, t, xt), solver.x0(eps_u, t, xt)
            x_prev = solver.step(x0_c + w * (x0_c - x0_u), eps_c + w * (eps_c - eps_u), t_prev)
            tp = t_prev.clamp(min=0)
            eps_prev = student(x_prev, tp, emb, **controlnet_residuals(nets, groups, pool, x_prev, tp, emb)).sample
            target = c_skip_prev * x_prev + c_out_prev * solver.x0(eps_prev, tp, x_prev)
        c = cfg["huber_c"]
        loss = (torch.sqrt(F.mse_loss(pred, target, reduction="none") + c**2) - c).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if not torch.isfinite(loss):
            raise SystemExit(f"loss became {loss.item()} at step {step}")
        log.add(step, loss.item())
        if step % cfg["save_every"] == 0 or step == cfg["steps"]:
            save_lora(student, out / "lora")
            lora_state = {k: v for k, v in student.state_dict().items() if "lora_" in k}
            save_state(out, step, opt, {"student": lora_state})
            if cfg.get("keep_snapshots"):
                save_lora(student, out / f"lora-{step}")


if __name__ == "__main__":
    main()
