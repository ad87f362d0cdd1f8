"""Scanning a models folder: what each model is (family, base or ControlNet and its control kind) and its size."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from noisebrush.engine.controls import kind_from_name
from noisebrush.engine.errors import UserError
from noisebrush.engine.flow import config_family, flow_family
from noisebrush.engine.flow_single import lacking, missing_note, unsupported_flux
from noisebrush.engine.gguf_files import INSTALL_GGUF, gguf_available, gguf_header, is_gguf
from noisebrush.engine.loras import looks_like_lora, lora_family
from noisebrush.engine.sources import PICKLE_SUFFIXES, check_safetensors

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth")


@dataclass(frozen=True)
class ModelEntry:
    name: str
    path: Path
    format: str  # "diffusers" | "single_file" | "gguf" | "pickle"
    family: str  # "sd15" | "sdxl" | "sd3" | "flux" | "?"
    role: str  # "base" | "controlnet" | "?"
    control_kind: str | None
    size_bytes: int
    note: str = ""  # why it cannot be used ("" when it can)
    detail: str = ""  # what else to know: where a transformer-only file's text encoders and VAE come from
    companion: Path | None = None  # that diffusers folder (engine/companions.py)

    @property
    def usable(self) -> bool:
        return self.format != "pickle" and self.family != "?" and not self.note


def user_data_dir() -> Path:
    """Where Noisebrush keeps the user's own files, per platform (what Qt's GenericDataLocation/Noisebrush is)."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "Noisebrush"


def models_dir() -> Path:
    """The models folder the GUI and the CLI share: $NOISEBRUSH_MODELS, else ~/Noisebrush/models where an earlier
    version made one, else <user data>/Noisebrush/models."""
    env = os.environ.get("NOISEBRUSH_MODELS")
    if env:
        return Path(env)
    legacy = Path.home() / "Noisebrush" / "models"
    return legacy if legacy.is_dir() else user_data_dir() / "models"


FAMILY_TITLES = {"sd15": "SD1.5", "sdxl": "SDXL", "sd3": "SD3", "flux": "Flux"}


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)


def _read_config(path: Path) -> dict:
    """A config.json that is a JSON object, else ValueError (a list or a number is not a config)."""
    try:
        data = json.loads(path.read_text())
    except RecursionError:  # as ValueError, which the callers take for a damaged config
        raise ValueError(f"{path.name} nests too deep") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path.name} is not a JSON object")
    return data


def classify_folder(path: Path) -> ModelEntry | None:
    if (path / "model_index.json").is_file():
        family = flow_family(path)  # a transformer, not a UNet
        if family is not None:
            return ModelEntry(path.name, path, "diffusers", family, "base", None, _size(path))
        try:
            unet_cfg = _read_config(path / "unet" / "config.json")
        except (OSError, ValueError, UnicodeDecodeError):
            return ModelEntry(path.name, path, "diffusers", "?", "base", None, _size(path), "no readable unet/config.json")
        return ModelEntry(path.name, path, "diffusers", config_family(unet_cfg), "base", None, _size(path))
    cfg_path = path / "config.json"
    if cfg_path.is_file():
        try:
            cfg = _read_config(cfg_path)
        except (OSError, ValueError, UnicodeDecodeError):
            return None
        cls = str(cfg.get("_class_name", ""))
        if cls.endswith("ControlNetModel") or cls == "ControlNetUnionModel":
            kind = None if cls == "ControlNetUnionModel" else kind_from_name(path.name)  # a Union serves every kind
            return ModelEntry(path.name, path, "diffusers", config_family(cfg), "controlnet", kind, _size(path))
    return None


def flow_file(keys: list[str]) -> tuple[str, str] | None:
    """(family, role) of an SD3 or Flux file, original or diffusers layout; None for any other file."""
    names = [k.removeprefix("model.diffusion_model.") for k in keys]
    if any(k.startswith(("controlnet_x_embedder", "controlnet_single_blocks", "input_hint_block")) for k in names):
        return "flux", "controlnet"  # InstantX/Shakker (diffusers layout), XLabs (hint block)
    if any(k.startswith("pos_embed_input") for k in names):
        return "sd3", "controlnet"
    if any(k.startswith(("double_blocks.", "single_blocks.", "single_transformer_blocks.")) for k in names):
        return "flux", "base"
    if any(k.startswith("joint_blocks.") for k in names):
        return "sd3", "base"
    return None


def _flow_entry(path: Path, header: dict, family: str, role: str, fmt: str) -> ModelEntry:
    """An SD3 or Flux file: usable when it carries its VAE and text encoders, or when a diffusers folder of its family
    on this computer lends them (a companion); otherwise named with what it lacks and where to get it."""
    from noisebrush.engine.companions import find_companion

    keys = [k for k in header if k != "__metadata__"]
    companion = None
    if role == "controlnet":
        note = f"single-file {FAMILY_TITLES[family]} ControlNets are not supported yet: use the diffusers folder"
    else:
        note = unsupported_flux(header) if family == "flux" else ""
        if not note and lacking(family, keys):
            companion = find_companion(path, family)
            note = "" if companion else missing_note(family, keys)
    detail = companion.note if companion else ""
    return ModelEntry(path.name, path, fmt, family, role, None, _size(path), note, detail, companion and companion.path)


def _gguf_entry(path: Path) -> ModelEntry:
    """A GGUF file (city96's quantized transformers): its family from the tensor names, as for safetensors."""
    if not gguf_available():
        return ModelEntry(path.name, path, "gguf", "?", "base", None, _size(path), INSTALL_GGUF)
    try:
        header = gguf_header(path)
    except UserError as exc:
        return ModelEntry(path.name, path, "gguf", "?", "?", None, _size(path), str(exc))
    flow = flow_file([k for k in header if k != "__metadata__"])
    if flow is None:  # a language model's GGUF, say
        return ModelEntry(path.name, path, "gguf", "?", "?", None, _size(path), "not an SD3 or Flux transformer")
    return _flow_entry(path, header, *flow, "gguf")


def classify_file(path: Path) -> ModelEntry | None:
    from noisebrush.engine.upscale import FOLDER, WEIGHTS_SUFFIXES

    if path.parent.name == FOLDER and path.suffix.lower() in WEIGHTS_SUFFIXES:  # read weights-only, checked on load
        return ModelEntry(path.name, path, "single_file", "any", "upscaler", None, _size(path))
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return ModelEntry(path.name, path, "pickle", "?", "?", None, _size(path), "pickle checkpoint: not opened (unsafe)")
    if is_gguf(path):
        return _gguf_entry(path)
    if path.suffix.lower() != ".safetensors":
        return None
    try:
        header = check_safetensors(path)
    except UserError as exc:
        return ModelEntry(path.name, path, "single_file", "?", "?", None, _size(path), str(exc))
    keys = [k for k in header if k != "__metadata__"]
    if any(k.startswith("image_proj.") for k in keys) and any(k.startswith("ip_adapter.") for k in keys):
        from noisebrush.engine.ip_adapters import FAMILY_WIDTH, adapter_files

        try:  # its image encoder must be beside it, or it cannot run
            family, note = FAMILY_WIDTH.get(adapter_files(path).cross_dim, "?"), ""
        except UserError as exc:
            family, note = "?", str(exc)
        return ModelEntry(path.name, path, "single_file", family, "ip-adapter", None, _size(path), note)
    if looks_like_lora(keys):
        return ModelEntry(path.name, path, "single_file", lora_family(header), "lora", None, _size(path))
    flow = flow_file(keys)
    if flow is not None:
        return _flow_entry(path, header, *flow, "single_file")
    if any(k.startswith(("control_model.", "controlnet_cond_embedding")) for k in keys):
        ctx = next((v["shape"][-1] for k, v in header.items() if k.endswith("attn2.to_k.weight") and v["shape"]), None)
        # SDXL ControlNets carry SDXL's added time/text embedding; 2048-wide cross-attention says so too
        xl = ctx == 2048 or any(k.startswith(("add_embedding.", "control_model.label_emb.")) for k in keys)
        family = "sdxl" if xl else "sd15"
        return ModelEntry(path.name, path, "single_file", family, "controlnet", kind_from_name(path.stem), _size(path))
    if any(k.startswith("conditioner.embedders.") for k in keys):
        return ModelEntry(path.name, path, "single_file", "sdxl", "base", None, _size(path))
    if any(k.startswith("model.diffusion_model.") for k in keys):
        return ModelEntry(path.name, path, "single_file", "sd15", "base", None, _size(path))
    return ModelEntry(path.name, path, "single_file", "?", "?", None, _size(path), "not a Stable Diffusion checkpoint")


def scan(folder: Path | None = None, depth: int = 2) -> list[ModelEntry]:
    """Every model under `folder` (two levels deep), sorted by role and name."""
    from noisebrush.engine.companions import remember_root

    root = Path(folder) if folder is not None else models_dir()
    if not root.is_dir():
        return []
    remember_root(root)  # transformer-only files anywhere find their companions here too
    found: list[ModelEntry] = []

    def walk(d: Path, level: int) -> None:
        for child in sorted(d.iterdir()):
            if child.name.startswith("."):
                continue
            if child.is_dir():
                try:
                    entry = classify_folder(child)
                except OSError as exc:
                    entry = ModelEntry(child.name, child, "diffusers", "?", "?", None, 0, f"cannot read: {exc}")
                if entry is not None:
                    found.append(entry)
                elif level < depth:
                    walk(child, level + 1)
            elif child.is_file():  # FIFOs, sockets and devices are never opened
                try:
                    entry = classify_file(child)
                except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:  # one bad file: go on
                    entry = ModelEntry(child.name, child, "single_file", "?", "?", None, 0, f"cannot read: {exc}")
                if entry is not None:
                    found.append(entry)

    walk(root, 1)
    return sorted(found, key=lambda e: (e.role != "base", e.family, e.name.lower()))


def format_table(entries: list[ModelEntry]) -> str:
    from noisebrush.engine.memory import footprint

    if not entries:
        return "no models found"
    rows = [("NAME", "FAMILY", "KIND", "FORMAT", "SIZE", "NOTE")]
    for e in entries:
        kind = e.role if e.role != "controlnet" else f"controlnet:{e.control_kind or '?'}"
        family = FAMILY_TITLES.get(e.family, "?")
        need = footprint(e.path, e.family, e.companion) if e.role == "base" and e.usable else None
        note = e.note or "; ".join(t for t in (e.detail, need.describe() if need else "") if t)
        rows.append((e.name, family, kind, e.format, f"{e.size_bytes / 1e6:.1f} MB", note))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:5], widths)) + ("  " + r[5] if r[5] else "") for r in rows)
