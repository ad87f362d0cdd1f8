"""How much GPU memory a base model needs, for the model picker: counted from the safetensors headers (shapes only,
no weights read, no torch) and a working margin per family at its default size.

Weights count 2 bytes per parameter, as they run in fp16/bf16 whatever the file stores (fp32 and fp8 files alike),
except GGUF transformers, which stay quantized on the GPU: their stored size. A transformer-only file adds the text
encoders and VAE of the diffusers folder it borrows them from (its companion).
The margin is the larger of the denoiser's activations and the VAE decode at the family's default size (see
bench/results/flow-memory.md): about 1 GB at 512 px for SD1.5, 3 GB at 1024 px for the others. With model CPU offload
only the largest part and the margin are on the GPU at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

GB = 1e9
MARGIN = {"sd15": 1.0 * GB, "sdxl": 3.0 * GB, "sd3": 3.0 * GB, "flux": 3.0 * GB}
FLOAT_TYPES = ("F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2")
VARIANT_WORDS = (".fp16.", ".bf16.", ".fp32.")


@dataclass(frozen=True)
class Footprint:
    weights: int  # bytes of all parts at 16 bits
    largest: int  # the largest part (what model CPU offload keeps on the GPU)
    margin: int  # activations and VAE decode at the default size

    @property
    def whole(self) -> int:
        return self.weights + self.margin

    @property
    def offloaded(self) -> int:
        return self.largest + self.margin

    def describe(self) -> str:
        """'needs 37 GB (27 GB with CPU offload)': what the picker shows."""
        text = f"needs {_gb(self.whole)}"
        if self.offloaded < 0.9 * self.whole:  # offload only matters when one part does not dominate
            text += f" ({_gb(self.offloaded)} with CPU offload)"
        return text


def _gb(n: int) -> str:
    return f"{math.ceil(n / GB)} GB" if n >= GB else f"{math.ceil(n / 1e8) * 100} MB"


def _header(path: Path) -> dict:
    """A safetensors header, or {} for anything unreadable or damaged (the picker shows no estimate then)."""
    from noisebrush.engine.errors import UserError
    from noisebrush.engine.sources import check_safetensors

    try:
        return check_safetensors(path)
    except (UserError, OSError):
        return {}


def _params(entry: dict) -> int:
    if not isinstance(entry, dict) or entry.get("dtype") not in FLOAT_TYPES or not isinstance(entry.get("shape"), list):
        return 0
    if not all(isinstance(s, int) and s >= 0 for s in entry["shape"]):  # a damaged header: no estimate, not a crash
        return 0
    return math.prod(entry["shape"])


def _file_part(key: str) -> str:
    """Which part of a single-file checkpoint a key belongs to; each text encoder is its own part."""
    if key.startswith(("first_stage_model.", "vae.")):
        return "vae"
    if key.startswith(("text_encoders.", "conditioner.embedders.")):  # SD3/Flux: clip_l, clip_g, t5xxl; SDXL: 0, 1
        return "text_encoder_" + key.split(".")[2 if key.startswith("conditioner.") else 1]
    return "text_encoder" if key.startswith("cond_stage_model.") else "denoiser"


def file_parts(path: Path) -> dict[str, int]:
    """Bytes at 16 bits of each part of a single-file checkpoint: denoiser, text encoders, VAE."""
    if path.suffix.lower() == ".gguf":  # a transformer alone, quantized
        from noisebrush.engine.gguf_files import gguf_weight_bytes

        size = gguf_weight_bytes(path)
        return {"denoiser": size} if size else {}
    parts: dict[str, int] = {}
    for key, entry in _header(path).items():
        part = _file_part(key)
        parts[part] = parts.get(part, 0) + 2 * _params(entry)
    return parts


def _weight_files(folder: Path) -> list[Path]:
    """The files from_pretrained would read in a component folder: the plain ones, else a variant's."""
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    plain = [f for f in files if not any(w in f.name for w in VARIANT_WORDS)]
    return plain or files


def folder_parts(folder: Path) -> dict[str, int]:
    """Bytes at 16 bits of each component a diffusers folder's model_index.json names."""
    from noisebrush.engine.flow import json_object

    parts: dict[str, int] = {}
    for name, value in json_object(folder / "model_index.json").items():
        if not isinstance(value, list) or not (folder / name).is_dir():
            continue
        total = 0
        for f in _weight_files(folder / name):
            if f.suffix == ".safetensors":
                total += sum(2 * _params(e) for k, e in _header(f).items() if k != "__metadata__")
            else:  # a pickle is never opened: assume fp32 on disk
                total += f.stat().st_size // 2
        if total:
            parts[name] = total
    return parts


def footprint(path: Path, family: str, companion: Path | None = None) -> Footprint | None:
    """What a base model (folder or single file) needs on the GPU; None when it cannot be told. `companion`: the
    diffusers folder whose parts other than the transformer a transformer-only file runs with."""
    if family not in MARGIN:
        return None
    parts = folder_parts(path) if path.is_dir() else file_parts(path)
    if not parts:
        return None
    if companion is not None:  # only the file's transformer runs; everything else is the companion's
        parts = {"denoiser": parts.get("denoiser", 0)}
        parts.update({k: v for k, v in folder_parts(companion).items() if k != "transformer"})
    return Footprint(sum(parts.values()), max(parts.values()), int(MARGIN[family]))
