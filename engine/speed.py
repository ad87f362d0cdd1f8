"""Speed options for the denoising models: channels-last memory, fused QKV projections, a forced SDPA attention
kernel, torch.compile with a compile cache on disk, and cuDNN autotuning.

They are chosen in `LoadOptions` and applied in place to the UNet, the ControlNets and the VAE once per module,
when a pipeline is built over them (`LoadedModel.pipeline` calls `prepare`), so a ControlNet loaded later gets
them too. `bench/gpu.py` measures each one; `DEFAULTS_NOTE` says which the engine turns on by itself and why.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

ATTENTION_BACKENDS = ("auto", "flash", "efficient", "cudnn", "math")
MARK = "_noisebrush_speed"  # set on each module once its options are applied

DEFAULTS_NOTE = (
    "All speed options are off by default. On an H200 (bench/results/gpu-2026-11-27.md), SD1.5 and SDXL with "
    "ControlNets are launch-bound: the GPU computes 17 ms of a 42 ms SD1.5 step and 62 ms of a 109 ms SDXL one. "
    "torch.compile halves the SD1.5 step (1.97x, paired runs) but takes 80-90 s at the first frame of every new "
    "shape (10 s with its disk cache warm) and needs Triton: an opt-in. Channels-last was slower (0.82x SD1.5, "
    "0.98x SDXL); fused QKV (1.07x, 1.05x), a forced SDPA kernel (0.98-1.04x) and cuDNN autotuning (1.01x) were "
    "within the run-to-run noise."
)


def compile_cache_dir() -> Path:
    """Where torch.compile keeps its compiled kernels between runs (TORCHINDUCTOR_CACHE_DIR wins if set)."""
    env = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if env:
        return Path(env)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "noisebrush" / "torch-compile"


def wanted(options: Any, device: str) -> tuple[str, ...]:
    """The option names that apply on this device, in the order they are applied."""
    names = []
    if getattr(options, "channels_last", False):
        names.append("channels_last")
    if getattr(options, "fuse_qkv", False):
        names.append("fuse_qkv")
    attention = getattr(options, "attention", "auto")
    if attention not in ATTENTION_BACKENDS:
        from noisebrush.engine.errors import UserError

        raise UserError(f"unknown attention backend {attention!r}; choose one of: {', '.join(ATTENTION_BACKENDS)}")
    if attention != "auto" and device == "cuda":  # the fused kernels exist on CUDA only
        names.append(f"attention={attention}")
    if getattr(options, "compile", False):
        names.append("compile")
    if getattr(options, "cudnn_benchmark", False) and device == "cuda":
        names.append("cudnn_benchmark")
    return tuple(names)


def prepare(model: Any, controlnets: list[Any]) -> None:
    """Apply model.options' speed options to its UNet and VAE and to these ControlNets (each module once)."""
    names = wanted(model.options, model.device.device)
    if not names:
        return
    if "cudnn_benchmark" in names:  # process-wide: set at every pipeline built over this model
        import torch

        torch.backends.cudnn.benchmark = True
    denoiser = model.components.get("unet") or model.components["transformer"]  # SD3 and Flux: a transformer
    parts = [("unet", denoiser), ("vae", model.components["vae"])]
    parts += [("controlnet", net) for net in controlnets]
    for role, module in parts:
        if getattr(module, MARK, None) is None:
            apply(module, role, names)


def apply(module: Any, role: str, names: tuple[str, ...]) -> None:
    """Apply the named options to one module in place. role: "unet" | "controlnet" | "vae"."""
    import torch

    done = []
    if "channels_last" in names:
        module.to(memory_format=torch.channels_last)
        done.append("channels_last")
    if "fuse_qkv" in names:
        with torch.no_grad():
            if fuse_qkv(module):
                done.append("fuse_qkv")
    attention = next((n.split("=", 1)[1] for n in names if n.startswith("attention=")), None)
    if attention and role != "vae":  # the VAE's one 512-wide attention head is beyond the flash kernel
        force_attention(module, attention)
        done.append(f"attention={attention}")
    if "compile" in names and role != "vae":  # the VAE runs once a frame: its compile time would not pay back
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(compile_cache_dir()))
        module.compile()
        done.append("compile")
    setattr(module, MARK, tuple(done))


def fuse_qkv(module: Any) -> bool:
    """One matmul for q, k and v (self-attention) or k and v (cross-attention) in every attention layer.

    Returns False where the model has attention layers this cannot fuse (added KV projections)."""
    from diffusers.models.attention_processor import Attention, FusedAttnProcessor2_0

    layers = [m for m in module.modules() if isinstance(m, Attention)]
    # added projections (SD1.5's added KV, SD3's joint attention) need processors of their own: left unfused
    if not layers or any("Added" in type(m.processor).__name__ or getattr(m, "add_q_proj", None) is not None for m in layers):
        return False
    for layer in layers:
        layer.fuse_projections(fuse=True)
        layer.set_processor(FusedAttnProcessor2_0())
    return True


def force_attention(module: Any, backend: str) -> None:
    """Run the module's forward with one SDPA kernel only (torch.nn.attention.sdpa_kernel)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    kernel = {
        "flash": SDPBackend.FLASH_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "cudnn": SDPBackend.CUDNN_ATTENTION,
        "math": SDPBackend.MATH,
    }[backend]
    inner = module.forward

    @functools.wraps(inner)
    def forward(*args, **kwargs):
        with sdpa_kernel(kernel):
            return inner(*args, **kwargs)

    module.forward = forward


def applied(module: Any) -> tuple[str, ...]:
    """The options applied to a module (empty before prepare, or with none on)."""
    return getattr(module, MARK, None) or ()
