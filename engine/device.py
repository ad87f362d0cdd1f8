"""Where the model runs, in which precision, and how many CPU threads torch may use."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class DeviceChoice:
    device: str  # "cuda" | "mps" | "cpu"
    dtype_name: str  # "float16" | "float32" | "bfloat16" (Flux on CUDA)

    @property
    def dtype(self):
        import torch

        return getattr(torch, self.dtype_name)


def pick_device(prefer: str | None = None) -> DeviceChoice:
    """cuda > mps > cpu, fp16 on CUDA only (fp16 on CPU is slow, on MPS it is unreliable for VAEs)."""
    import torch

    prefer = prefer or os.environ.get("NOISEBRUSH_DEVICE") or None
    if prefer:
        return DeviceChoice(prefer, "float16" if prefer == "cuda" else "float32")
    if torch.cuda.is_available():
        return DeviceChoice("cuda", "float16")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return DeviceChoice("mps", "float32")
    return DeviceChoice("cpu", "float32")


@dataclass(frozen=True)
class LoadOptions:
    """How models are loaded. The memory options are for small GPUs; all off is fastest where memory allows."""

    fp16: bool | None = None  # None: fp16 on CUDA, fp32 elsewhere
    attention_slicing: bool = False
    cpu_offload: bool = False  # move each model to the GPU only while it runs (needs CUDA)
    vae_tiling: bool = False  # decode large images in tiles
    preview_decoder: str = "auto"  # "auto": a tiny autoencoder when one is found, else linear; "linear"; "taesd"
    # speed options (noisebrush.engine.speed; bench/gpu.py measures each one)
    channels_last: bool = False  # UNet, ControlNets and VAE in channels-last memory
    fuse_qkv: bool = False  # one matmul for q, k, v in every attention layer
    attention: str = "auto"  # "auto": PyTorch picks; "flash" | "efficient" | "cudnn" | "math" force one kernel (CUDA)
    compile: bool = False  # torch.compile the UNet and ControlNets: slow first run, kernels cached on disk
    cudnn_benchmark: bool = False  # let cuDNN time its convolution algorithms per shape (CUDA)
    # layer by layer to the GPU: Flux or SD3.5 Large in a few GB of GPU memory, at several times the time (CUDA)
    sequential_offload: bool = False

    @property
    def offloads(self) -> bool:
        return self.cpu_offload or self.sequential_offload


def choose(options: LoadOptions, prefer: str | None = None) -> DeviceChoice:
    base = pick_device(prefer)
    if options.fp16 is None or base.device == "cpu":  # fp16 matmuls on CPU are slow or missing
        return base
    return DeviceChoice(base.device, "float16" if options.fp16 else "float32")


def default_threads() -> int:
    """Torch threads: every core, as torch, diffusers and ComfyUI use. Measured on 2 cores (bench/threads.py,
    bench/results/threads-2026-12-06.md): 2 threads were 1.22× faster than 1 at 128 px, 1.33× at 256 px and 1.86×
    at 512 px, and the GUI's event loop stayed responsive (bench/ui_latency.py)."""
    return max(1, os.cpu_count() or 1)


def set_torch_threads(n: int | None) -> int:
    import torch

    if n is not None and n > 0:
        torch.set_num_threads(n)
    return torch.get_num_threads()
