"""Upscaling a picture: by an upscale model (ESRGAN, RealESRGAN, SwinIR, DAT… through spandrel's architecture
detection) or by Lanczos, in overlapping tiles so memory stays bounded, with progress and cancel.

Files are read here, never by spandrel's own loader (its restricted unpickler is not fully safe, says its README):
`.safetensors` by safetensors, `.pth`/`.pt` only by `torch.load(weights_only=True)`; a file that needs more than
plain weights is refused like a `.ckpt`. spandrel_extra_arches (non-commercial architectures) is not installed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from noisebrush.engine.backends.base import Stopped
from noisebrush.engine.errors import UserError
from noisebrush.engine.sources import check_safetensors, refuse_pickle
from noisebrush.engine.tiling import Blend, plan_tiles

WEIGHTS_SUFFIXES = (".safetensors", ".pth", ".pt")
FOLDER = "upscale_models"  # ComfyUI's and Krita AI Diffusion's folder name; any other place works when named
MODEL_TILE, MODEL_OVERLAP = 256, 16  # px of the picture a model reads at once: ~0.5 GB for ESRGAN at 4×
MAX_SCALE = 8.0
Progress = Callable[[float, str], None]  # (fraction done, what is happening)


@dataclass
class Upscaler:
    """A loaded upscale model: `scale` is its own factor (2, 3, 4…)."""

    name: str
    scale: int
    descriptor: object  # spandrel's ImageModelDescriptor

    def run(self, picture: np.ndarray, progress: Progress | None = None, cancelled: threading.Event | None = None
            ) -> np.ndarray:  # fmt: skip
        """One pass at the model's own scale, tile by tile (a tile of the picture, blended at the output size)."""
        import torch

        h, w = picture.shape[:2]
        s = self.scale
        out = Blend(w * s, h * s)
        tiles = plan_tiles(w, h, MODEL_TILE, MODEL_OVERLAP)
        model = self.descriptor
        for i, t in enumerate(tiles):
            if cancelled is not None and cancelled.is_set():
                raise Stopped(0)
            crop = picture[t.y : t.y + t.height, t.x : t.x + t.width]
            x = torch.from_numpy(np.array(crop)).permute(2, 0, 1)[None].float().div(255)
            with torch.inference_mode():
                y = model(x.to(model.device, model.dtype)).float().clamp(0, 1)
            tile_out = (y[0].permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8)
            big = plan_tiles(w * s, h * s, MODEL_TILE * s, MODEL_OVERLAP * s)[i]  # the same tile at the output size
            out.add(big, tile_out[: big.height, : big.width])
            if progress:
                progress((i + 1) / len(tiles), f"{self.name}: tile {i + 1} of {len(tiles)}")
        return out.result()


_loaded: dict[tuple[str, float], Upscaler] = {}


def read_weights(path: Path) -> dict:
    """The file's tensors, read safely: safetensors, or a pickle through weights-only loading."""
    import torch

    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        check_safetensors(path)
        from safetensors.torch import load_file

        return load_file(str(path))
    if suffix not in (".pth", ".pt"):
        if suffix in (".ckpt", ".bin", ".pkl"):
            refuse_pickle(path)
        raise UserError(f"{path.name} is not an upscale model file (.safetensors or .pth)")
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for a pickle that holds code or objects, others for damaged files
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise UserError(f"{path.name} holds more than plain weights (a pickle that could run code), so "
                            "Noisebrush does not open it; use a .safetensors version of this upscaler") from None  # fmt: skip
        raise UserError(f"{path.name} cannot be read as an upscale model ({type(exc).__name__}); the file may be "
                        "damaged") from None  # fmt: skip
    for key in ("params_ema", "params", "state_dict", "model"):  # BasicSR and other trainers nest the weights
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
    if not isinstance(data, dict) or not data or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise UserError(f"{path.name} is not an upscale model: it holds no table of weights")
    return data


def load_upscaler(path: str | Path) -> Upscaler:
    """An upscale model from a file, once per file (cached by path and modification time)."""
    from noisebrush.engine.images import regular_file

    path = Path(path)
    regular_file(path)
    key = (str(path.resolve()), path.stat().st_mtime)
    if key in _loaded:
        return _loaded[key]
    from spandrel import ImageModelDescriptor, ModelLoader, UnsupportedModelError

    weights = read_weights(path)
    try:
        descriptor = ModelLoader("cpu").load_from_state_dict(weights)
    except UnsupportedModelError:
        raise UserError(f"{path.name} is not an upscale model Noisebrush knows (ESRGAN, RealESRGAN, SwinIR, DAT, HAT, "
                        "OmniSR…)") from None  # fmt: skip
    except Exception as exc:
        raise UserError(f"{path.name} looks like an upscale model but its weights do not fit ({exc})") from None
    if not isinstance(descriptor, ImageModelDescriptor) or descriptor.input_channels != 3:
        raise UserError(f"{path.name} is a {descriptor.architecture.name} model, not an upscaler of colour pictures")
    if descriptor.scale < 1 or descriptor.scale > MAX_SCALE:
        raise UserError(f"{path.name} scales by {descriptor.scale}; Noisebrush takes upscalers of 1× to {MAX_SCALE:g}×")
    descriptor.eval()
    up = Upscaler(path.name, int(descriptor.scale), descriptor)
    _loaded.clear()  # one model kept: they are 10–200 MB each
    _loaded[key] = up
    return up


def find_upscalers(root: Path) -> list[Path]:
    """Upscale model files under the models folder: everything in an `upscale_models/` folder (a few levels deep)."""
    found: list[Path] = []
    if not root.is_dir():
        return found
    for folder in [root / FOLDER, *root.glob(f"*/{FOLDER}"), *root.glob(f"*/*/{FOLDER}")]:
        if folder.is_dir():
            found += sorted(p for p in folder.rglob("*") if p.suffix.lower() in WEIGHTS_SUFFIXES and p.is_file())
    return found


def lanczos(picture: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.asarray(Image.fromarray(np.ascontiguousarray(picture)).resize((width, height), Image.Resampling.LANCZOS))


def check_scale(scale: float, width: int, height: int) -> tuple[int, int]:
    """The output size of a scale: one sentence for 0, 100 or a result past the document's limit."""
    from noisebrush.engine.composition import TILED_SIDES

    if not isinstance(scale, (int, float)) or not 1.0 <= scale <= MAX_SCALE:
        raise UserError(f"an upscale's scale must be from 1 to {MAX_SCALE:g} (got {scale:g})")
    out = (round(width * scale / 8) * 8, round(height * scale / 8) * 8)
    if max(out) > TILED_SIDES[1]:
        raise UserError(f"{width}×{height} × {scale:g} would be {out[0]}×{out[1]} px; Noisebrush makes pictures up "
                        f"to {TILED_SIDES[1]} px a side: choose a smaller scale")  # fmt: skip
    return out


def upscale(picture: np.ndarray, width: int, height: int, upscaler: Upscaler | None = None,
            progress: Progress | None = None, cancelled: threading.Event | None = None) -> np.ndarray:  # fmt: skip
    """`picture` at width×height: the model's passes while they fall short of it, then Lanczos to the exact size."""
    current = picture
    if upscaler is not None and upscaler.scale > 1:
        while current.shape[1] < width or current.shape[0] < height:
            current = upscaler.run(current, progress, cancelled)
    if current.shape[:2] != (height, width):
        current = lanczos(current, width, height)
    return current
