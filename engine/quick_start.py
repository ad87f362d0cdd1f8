"""The quick start: the embedded model's first frames before diffusers and transformers have loaded.

A fresh process spends about 4 s importing diffusers and transformers (bench/cold_start.py), longer than the
embedded model's whole first frame. This path needs torch, safetensors and the `tokenizers` library only: the
networks of engine/quick_nets.py, MiniLM's tokenizer file, and the two samplers the embedded model's plain requests
use (its DPM++ 2M and its few-step LCM path), written out from diffusers' schedulers for this configuration. It
runs plain text-to-image requests on the embedded model on the CPU, with its own ControlNets; anything else
(another model, an init picture, regions, references, LoRAs, other samplers or speed options) waits for the full
Runner. tests/test_quick_start.py holds its pictures to the Runner's for the same request and seed.
"""

from __future__ import annotations

import functools
import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from noisebrush.engine.backends.base import Stopped
from noisebrush.engine.device import DeviceChoice, LoadOptions
from noisebrush.engine.events import Event, Finished, Preview, Progress
from noisebrush.engine.request import MAX_SEED, GenerationRequest

QUICK_SCHEDULER = "DPM++ 2M"


def quick_refusal(req: GenerationRequest, device: DeviceChoice, options: LoadOptions) -> str | None:
    """Why the quick path cannot run this request exactly as the Runner would; None when it can."""
    from noisebrush.engine.paths import default_model_dir

    if req.model:
        return "another model"
    if device.device != "cpu" or device.dtype_name != "float32":
        return "not the CPU"
    if options != LoadOptions(preview_decoder=options.preview_decoder) or options.preview_decoder == "taesd":
        return "load options"
    if req.init_image is not None or req.mask is not None or req.tiling is not None:
        return "not text to image"
    if req.regions or req.active_references() or req.loras:
        return "regions, references or LoRAs"
    nets = default_model_dir() / "controlnets"
    if any(c.model is not None or not (nets / c.kind).is_dir() for c in req.active_controls()):
        return "a ControlNet the embedded model does not ship"
    few = _few_step()
    if not (few is not None and req.steps <= few.steps) and req.scheduler != QUICK_SCHEDULER:
        return f"the {req.scheduler} sampler"
    if few is not None and req.steps <= few.steps and (few.scheduler != "LCM" or few.lora):
        return "a few-step path other than LCM"
    return None


@functools.lru_cache(maxsize=1)
def _few_step():
    from noisebrush.engine.models import model_defaults

    return model_defaults("").few_step


def _read_config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


def _load(module: torch.nn.Module, file: Path, prefixes: tuple[str, ...] = ("",)) -> torch.nn.Module:
    from safetensors.torch import load_file

    tensors = {k: v for k, v in load_file(file).items() if k.startswith(prefixes)}
    module.load_state_dict(tensors, strict=True)
    return module.eval().requires_grad_(False)


class QuickModel:
    """The embedded model's tokenizer, text encoder, UNet, ControlNets (loaded when first asked) and decoder."""

    def __init__(self) -> None:
        from tokenizers import Tokenizer

        from noisebrush.engine import quick_nets as nets
        from noisebrush.engine.colour_words import reader_for
        from noisebrush.engine.decode_margin import add_decode_margin, margin_cells
        from noisebrush.engine.models import model_defaults, read_model_meta
        from noisebrush.engine.paths import default_model_dir
        from noisebrush.engine.previews import LinearPreview
        from noisebrush.engine.text_encoder import MAX_TOKENS, dequantize, minilm_dir

        folder = self.folder = default_model_dir()
        self.tokenizer = Tokenizer.from_file(str(minilm_dir() / "tokenizer.json"))
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.enable_padding(length=MAX_TOKENS, pad_id=0, pad_token="[PAD]")
        from safetensors.torch import load_file

        self.text_encoder = nets.Bert(_read_config(minilm_dir()))
        self.text_encoder.load_state_dict(dequantize(load_file(minilm_dir() / "model.safetensors")), strict=True)
        self.text_encoder.eval().requires_grad_(False)
        self.unet = _load(nets.UNet(_read_config(folder / "unet")), folder / "unet" / "diffusion_pytorch_model.safetensors")
        vae = _read_config(folder / "vae")
        weights = folder / "vae" / "diffusion_pytorch_model.safetensors"
        self.decoder = _load(nets.Decoder(vae), weights, ("decoder.", "post_quant_conv."))
        self.scaling_factor = float(vae["scaling_factor"])
        self.vae_factor = 2 ** (len(vae["block_out_channels"]) - 1)
        meta = read_model_meta(folder)
        add_decode_margin(self.decoder, margin_cells(meta), self.vae_factor)
        self.schedule = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
        self.defaults = model_defaults("")
        self.colours = reader_for(folder, meta)
        self.preview = LinearPreview.for_model(folder)
        self._controlnets: dict[str, torch.nn.Module] = {}

    def controlnet(self, kind: str) -> torch.nn.Module:
        if kind not in self._controlnets:
            from noisebrush.engine.quick_nets import ControlNet

            path = self.folder / "controlnets" / kind
            self._controlnets[kind] = _load(ControlNet(_read_config(path)), path / "diffusion_pytorch_model.safetensors")
        return self._controlnets[kind]

    def encode(self, text: str) -> torch.Tensor:
        ids = torch.tensor([self.tokenizer.encode(text).ids])
        states = self.text_encoder(ids)
        return states if self.colours is None else self.colours.add(states, text)


def alphas_cumprod(cfg: dict) -> torch.Tensor:
    """The scaled-linear ᾱ_t of diffusers' schedulers, in float32 as they compute it."""
    betas = torch.linspace(cfg["beta_start"] ** 0.5, cfg["beta_end"] ** 0.5, cfg["num_train_timesteps"], dtype=torch.float32) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


@dataclass
class DpmSolver2M:
    """diffusers' DPMSolverMultistepScheduler as the embedded model configures it: dpmsolver++, order 2, midpoint,
    leading spacing, final sigma zero, a lower order at the end."""

    cfg: dict
    steps: int

    def __post_init__(self) -> None:
        acp = alphas_cumprod(self.cfg)
        ratio = self.cfg["num_train_timesteps"] // (self.steps + 1)
        t = (np.arange(0, self.steps + 1) * ratio).round()[::-1][:-1].copy().astype(np.int64)
        t += self.cfg.get("steps_offset", 0)
        sigmas = np.array(((1 - acp) / acp) ** 0.5)
        sigmas = np.interp(t, np.arange(0, len(sigmas)), sigmas)
        self.sigmas = torch.from_numpy(np.concatenate([sigmas, [0]]).astype(np.float32))
        self.timesteps = torch.from_numpy(t)
        self.outputs: list[torch.Tensor] = []

    @staticmethod
    def _alpha_sigma(sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        alpha = 1 / ((sigma**2 + 1) ** 0.5)
        return alpha, sigma * alpha

    def step(self, eps: torch.Tensor, i: int, sample: torch.Tensor, generator) -> tuple[torch.Tensor, torch.Tensor]:
        alpha_s0, sigma_s0 = self._alpha_sigma(self.sigmas[i])
        x0 = (sample - sigma_s0 * eps) / alpha_s0
        self.outputs = [*self.outputs[-1:], x0]
        alpha_t, sigma_t = self._alpha_sigma(self.sigmas[i + 1])
        lambda_t = torch.log(alpha_t) - torch.log(sigma_t)
        lambda_s0 = torch.log(alpha_s0) - torch.log(sigma_s0)
        h = lambda_t - lambda_s0
        first = i == 0 or i == self.steps - 1  # final sigma zero: the last step is first order
        if first:
            return (sigma_t / sigma_s0) * sample - (alpha_t * (torch.exp(-h) - 1.0)) * x0, x0
        alpha_s1, sigma_s1 = self._alpha_sigma(self.sigmas[i - 1])
        h_0 = lambda_s0 - (torch.log(alpha_s1) - torch.log(sigma_s1))
        m0, m1 = self.outputs[-1], self.outputs[-2]
        d1 = (1.0 / (h_0 / h)) * (m0 - m1)
        first_term = (sigma_t / sigma_s0) * sample - (alpha_t * (torch.exp(-h) - 1.0)) * m0
        return first_term - 0.5 * (alpha_t * (torch.exp(-h) - 1.0)) * d1, x0


@dataclass
class Lcm:
    """diffusers' LCMScheduler (50 original steps, timestep scaling 10, σ_data 0.5): each step predicts x0 and
    noises it again to the next step's level with the request's generator."""

    cfg: dict
    steps: int

    def __post_init__(self) -> None:
        self.acp = alphas_cumprod(self.cfg)
        k = self.cfg["num_train_timesteps"] // 50
        origin = (np.asarray(list(range(1, 51))) * k - 1)[::-1].copy()
        idx = np.floor(np.linspace(0, len(origin), num=self.steps, endpoint=False)).astype(np.int64)
        self.timesteps = torch.from_numpy(origin[idx]).to(dtype=torch.long)

    def step(self, eps: torch.Tensor, i: int, sample: torch.Tensor, generator) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.timesteps[i]
        prev_t = self.timesteps[i + 1] if i + 1 < self.steps else t
        a_t, a_prev = self.acp[t], self.acp[prev_t]
        scaled = t * 10.0
        c_skip = 0.5**2 / (scaled**2 + 0.5**2)
        c_out = scaled / (scaled**2 + 0.5**2) ** 0.5
        x0 = (sample - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        denoised = c_out * x0 + c_skip * sample
        if i == self.steps - 1:
            return denoised, denoised
        noise = torch.randn(eps.shape, generator=generator, dtype=denoised.dtype)
        return a_prev.sqrt() * denoised + (1 - a_prev).sqrt() * noise, denoised


def _control_image(image: np.ndarray) -> torch.Tensor:
    """diffusers' control image processor for a map of the output's size (validate() checks it is): [0, 1], NCHW."""
    rgb = np.array(Image.fromarray(image).convert("RGB"))
    return torch.from_numpy((rgb.astype(np.float32) / 255.0)[None].transpose(0, 3, 1, 2))


class QuickRunner:
    """Runs what quick_refusal lets through, emitting the same events as the Runner."""

    def __init__(self, preview_interval_s: float = 1 / 30, previews: bool = True) -> None:
        self.preview_interval_s = preview_interval_s
        self.previews = previews
        self.model: QuickModel | None = None

    def load(self) -> QuickModel:
        if self.model is None:
            self.model = QuickModel()
        return self.model

    def run(self, job_id: int, req: GenerationRequest, emit: Callable[[Event], None], cancelled: threading.Event) -> None:
        req.validate()
        t0 = time.perf_counter()
        if self.model is None:
            emit(Progress(job_id, "loading model noisebrush-default…"))
        m = self.load()
        controls = req.active_controls()
        nets = [m.controlnet(c.kind) for c in controls]
        if cancelled.is_set():
            raise Stopped(0)
        few = m.defaults.few_step
        if few is not None and req.steps <= few.steps:
            sampler, guidance = Lcm(m.schedule, req.steps), few.guidance
        else:
            sampler, guidance = DpmSolver2M(m.schedule, req.steps), req.guidance
        cfg = guidance > 1
        seed = req.seed if req.seed is not None else random.randint(0, MAX_SEED)
        generator = torch.Generator("cpu").manual_seed(seed)
        n = len(sampler.timesteps)
        with torch.inference_mode():
            context = m.encode(req.prompt)
            if cfg:
                context = torch.cat([m.encode(req.negative_prompt), context])
            images = [_control_image(c.image) for c in controls]
            images = [torch.cat([i] * 2) if cfg else i for i in images]
            shape = (1, 4, req.height // m.vae_factor, req.width // m.vae_factor)
            latents = torch.randn(shape, generator=generator, dtype=torch.float32)
            last_emit = float("-inf")
            for i, t in enumerate(sampler.timesteps):
                x = torch.cat([latents] * 2) if cfg else latents
                down = mid = None
                for net, c, image in zip(nets, controls, images):
                    keep = 1.0 - float(i / n < c.start or (i + 1) / n > c.end)
                    d, md = net(x, t, context, image, c.weight * keep)
                    down, mid = (d, md) if down is None else ([a + b for a, b in zip(down, d)], mid + md)
                eps = m.unet(x, t, context, down, mid)
                if cfg:
                    uncond, text = eps.chunk(2)
                    eps = uncond + guidance * (text - uncond)
                latents, x0 = sampler.step(eps, i, latents, generator)
                if cancelled.is_set():
                    raise Stopped(i + 1)
                now = time.perf_counter()
                if self.previews and (i + 1 == n or now - last_emit >= self.preview_interval_s):
                    last_emit = now
                    emit(Preview(job_id, i + 1, n, m.preview.decode(x0), now - t0))
            pixels = m.decoder(latents / m.scaling_factor)
        if cancelled.is_set():
            raise Stopped(req.steps)
        result = (pixels / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).float().numpy()[0]
        image = (np.clip(result, 0.0, 1.0) * 255.0).round().astype(np.uint8)
        emit(Finished(job_id, image, req.replace(seed=seed), time.perf_counter() - t0, "noisebrush-default"))
