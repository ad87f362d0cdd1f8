"""Cheap step previews: the denoised estimate x0, decoded by a linear latent→RGB map.

The full VAE decode costs more than a denoising step on small models; a 4×3 matrix
costs nothing. x0 (not the noisy latent x_t) is what the picture will become, so the
preview reads as an image from the first steps on.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from noisebrush.engine.flow import LATENT_RGB, flow_x0

# ComfyUI's fitted factors (latent_formats.py): rgb = latentᵀ·M + bias, in [-1, 1].
SD15_LATENT_RGB = ((0.3512, 0.2297, 0.3227), (0.3250, 0.4974, 0.2350), (-0.2829, 0.1762, 0.2721), (-0.2120, -0.2616, -0.7177))
SD15_BIAS = (0.0, 0.0, 0.0)
SDXL_LATENT_RGB = ((0.3651, 0.4232, 0.4341), (-0.2533, -0.0042, 0.1068), (0.1076, 0.1111, -0.0362), (-0.3165, -0.2492, -0.2188))
SDXL_BIAS = (0.1084, -0.0175, -0.0011)
PREVIEW_FILE = "preview.json"


@dataclass(frozen=True)
class LinearPreview:
    matrix: tuple[tuple[float, float, float], ...]  # one row per latent channel
    bias: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @classmethod
    def for_model(cls, folder: Path | None, family: str = "sd15") -> LinearPreview:
        """The model folder's own fitted map if it has one, else the family's published one."""
        if folder is not None and (folder / PREVIEW_FILE).is_file():
            data = json.loads((folder / PREVIEW_FILE).read_text())
            return cls(tuple(tuple(r) for r in data["latent_rgb"]), tuple(data.get("bias", (0, 0, 0))))
        if family == "sdxl":
            return cls(SDXL_LATENT_RGB, SDXL_BIAS)
        if family in LATENT_RGB:  # SD3, Flux: 16 latent channels
            return cls(*LATENT_RGB[family])
        return cls(SD15_LATENT_RGB, SD15_BIAS)

    def save(self, folder: Path) -> None:
        (folder / PREVIEW_FILE).write_text(json.dumps({"latent_rgb": self.matrix, "bias": self.bias}, indent=1))

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """latents (1|C, h, w) in model space → h×w×3 uint8 (a fresh array)."""
        lat = latents[0] if latents.dim() == 4 else latents
        m = torch.tensor(self.matrix, dtype=torch.float32)
        rgb = torch.einsum("chw,cr->hwr", lat.detach().float().cpu(), m) + torch.tensor(self.bias)
        return ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()


class TinyAutoencoderPreview:
    """Sharper previews from a TAESD-style AutoencoderTiny (≈1 M decoder parameters), at full resolution."""

    def __init__(self, model) -> None:
        self.model = model.eval()

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        lat = (latents[:1] if latents.dim() == 4 else latents[None]).to(self.model.device, self.model.dtype)
        with torch.inference_mode():
            img = self.model.decode(lat).sample[0].float().cpu()
        return ((img.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()


# SD3's and Flux's tiny autoencoders (taesd3, taef1) are not wired yet: their latent scaling is unchecked here.
TAESD_HUB = {"sd15": "madebyollin/taesd", "sdxl": "madebyollin/taesdxl"}


def find_tiny_autoencoder(folder: Path | None, family: str) -> Path | None:
    """A tiny autoencoder next to the model (<folder>/taesd) or in the local HF cache. Never downloads."""
    if family not in TAESD_HUB:
        return None
    if folder is not None and (folder / "taesd" / "config.json").is_file():
        return folder / "taesd"
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(TAESD_HUB[family], local_files_only=True, allow_patterns=["*.json", "*.safetensors"]))
    except Exception:  # not cached: fine, linear previews it is
        return None


def load_preview(folder: Path | None, family: str, mode: str, device: str, dtype) -> LinearPreview | TinyAutoencoderPreview:
    linear = LinearPreview.for_model(folder, family)
    if mode == "linear":
        return linear
    found = find_tiny_autoencoder(folder, family)
    if found is None:
        if mode == "taesd":
            from noisebrush.engine.errors import UserError

            raise UserError(f"no tiny autoencoder found: put one in {folder}/taesd or cache {TAESD_HUB[family]}")
        return linear
    from diffusers import AutoencoderTiny

    return TinyAutoencoderPreview(AutoencoderTiny.from_pretrained(found, torch_dtype=dtype, local_files_only=True).to(device))


def fit_linear_preview(latents: np.ndarray, images: np.ndarray) -> LinearPreview:
    """Least squares from latents (N, C, h, w) to images already downsampled to (N, h, w, 3) in [-1, 1]."""
    x = latents.transpose(0, 2, 3, 1).reshape(-1, latents.shape[1])
    x1 = np.concatenate([x, np.ones((len(x), 1))], axis=1)
    y = images.reshape(-1, 3)
    sol, *_ = np.linalg.lstsq(x1, y, rcond=None)
    matrix = tuple(tuple(float(v) for v in row) for row in sol[:-1])
    return LinearPreview(matrix, tuple(float(v) for v in sol[-1]))


class X0Tap:
    """Wraps a scheduler's `step` to keep the denoised estimate x0 of the latest step.

    Euler, Euler a, DDIM, LCM and DDPM return it; multistep solvers (DPM++, UniPC) do
    not, so it is computed from x_t, the model output and ᾱ_t. Flow-matching samplers (SD3,
    Flux) have no ᾱ_t: there x0 = x_t − σ·v. `unpack` turns the sampler's layout into
    (1, C, h, w) for the preview (Flux packs 2×2 patches into tokens).
    """

    def __init__(self, scheduler, unpack=None) -> None:
        self.scheduler = scheduler
        self.unpack = unpack
        self.x0: torch.Tensor | None = None
        self._acp_on: dict = {}  # device → alphas_cumprod there (for _estimate)
        self._step = scheduler.step

        # instance attribute: this scheduler object only. The wrapper shows step's own signature: pipelines pass
        # `generator` (and `eta`) only to a step that declares them, and ancestral samplers need the request's
        # generator to reproduce a seed.
        @functools.wraps(self._step)
        def step(*args, **kwargs):
            return self.step(*args, **kwargs)

        scheduler.step = step

    def step(self, model_output, timestep, sample, *args, return_dict: bool = True, **kwargs):
        out = self._step(model_output, timestep, sample, *args, return_dict=True, **kwargs)
        x0 = getattr(out, "pred_original_sample", None)
        if x0 is None:
            x0 = getattr(out, "denoised", None)
        x0 = x0 if x0 is not None else self._estimate(model_output, timestep, sample)
        self.x0 = self.unpack(x0) if self.unpack is not None else x0
        return out if return_dict else out.to_tuple()

    def _estimate(self, model_output, timestep, sample) -> torch.Tensor:
        if not hasattr(self.scheduler, "alphas_cumprod"):  # flow matching: the step just taken had σ
            return flow_x0(self.scheduler, model_output, sample)
        # ᾱ_t looked up on the sample's device: no .item() and no host copy, so a GPU is not made to wait each step
        acp = self._acp_on.get(sample.device)
        if acp is None:
            acp = self._acp_on[sample.device] = self.scheduler.alphas_cumprod.to(sample.device, torch.float32)
        index = torch.as_tensor(timestep, device=sample.device).long().clamp(0, len(acp) - 1)
        a = acp[index]
        kind = self.scheduler.config.get("prediction_type", "epsilon")
        s, m = sample.float(), model_output.float()
        if kind == "v_prediction":
            return a.sqrt() * s - (1 - a).sqrt() * m
        if kind == "sample":
            return m
        return (s - (1 - a).sqrt() * m) / a.sqrt()
