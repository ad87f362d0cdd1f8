"""Loading base models and ControlNets, checking they fit together, and building pipelines from them.

A base model is loaded once; ControlNets are loaded per kind and cached, so switching
controls never reloads the base. Pipelines are cheap views over the same components.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from noisebrush.engine.device import DeviceChoice, LoadOptions
from noisebrush.engine.errors import UserError, first_line
from noisebrush.engine.few_step import FewStep, read_few_step
from noisebrush.engine.flow import COMPONENTS as FLOW_COMPONENTS
from noisebrush.engine.flow import (
    FLOW_FAMILIES,
    FLOW_SCHEDULER,
    NET_CLASS,
    check_family,
    check_flow_controlnet_fits,
    config_family,
    flow_defaults,
    flow_device,
    flow_family,
    open_flow_pipeline,
    pipeline_name,
)
from noisebrush.engine.text_encoder import NAMES as MINILM_NAMES
from noisebrush.engine.text_encoder import load_minilm

if TYPE_CHECKING:  # previews import torch: the GUI reads model defaults from here without it
    from noisebrush.engine.previews import LinearPreview, TinyAutoencoderPreview

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
    guidance_kind: str = "cfg"  # "cfg", "distilled" (Flux dev: an embedding, not CFG) or "none" (Flux schnell)
    few_step: FewStep | None = None  # engine/few_step.py: its own sampler (and LoRA) at a few steps


def resolve_model_dir(ref: str) -> Path:
    """The local path a model reference names: the embedded folder (""), a diffusers folder, a cached Hub id's
    snapshot folder, or a .safetensors checkpoint file.

    Never downloads: an uncached Hub id fails at once (see engine.sources for explicit downloads).
    """
    from noisebrush.engine.sources import resolve_source

    source = resolve_source(ref)
    folder = source.path
    if source.kind == "embedded" and not (folder / "model_index.json").is_file():
        raise UserError(f"the embedded default model is missing from {folder}; reinstall Noisebrush")
    if source.kind == "single_file":
        return folder  # a .safetensors checkpoint: load_base opens it with the bundled configs
    if not (folder / "model_index.json").is_file():
        if (folder / "config.json").is_file():
            raise UserError(
                f"{folder} holds a single model part (a ControlNet?), not a whole pipeline: choose it as a layer's ControlNet"
            )
        raise UserError(f"{folder} is not a diffusers model folder: it has no model_index.json")
    return folder


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON config that must be an object; UserError naming the file otherwise (never a traceback)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise UserError(f"{path}: unreadable ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: not a JSON object (a broken or foreign file)")
    return data


def read_model_meta(folder: Path) -> dict[str, Any]:
    path = folder / MODEL_META_FILE
    return read_json_object(path) if path.is_file() else {}


FEW_STEP_WORDS = {  # name word: (scheduler, steps, guidance)
    "lcm": ("LCM", 4, 1.0),
    "turbo": ("Euler a", 4, 0.0),
    "lightning": ("Euler", 4, 0.0),
    "hyper": ("Euler a", 6, 1.0),
}


def few_step_defaults(folder: Path) -> ModelDefaults | None:
    """Distilled few-step models (LCM, Turbo, Lightning, Hyper) want few steps and no or low guidance."""
    try:
        sched = json.loads((folder / "scheduler" / "scheduler_config.json").read_text()).get("_class_name", "")
        unet = json.loads((folder / "unet" / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if sched == "LCMScheduler" or unet.get("time_cond_proj_dim") is not None:
        return ModelDefaults(512, 512, 4, 1.0, "LCM")
    name = model_folder_name(folder).lower()
    for word, (scheduler, steps, guidance) in FEW_STEP_WORDS.items():
        if word in name:
            return ModelDefaults(512, 512, steps, guidance, scheduler)
    return None


def model_folder_name(folder: Path) -> str:
    """A folder's model name; for a Hub cache snapshot (…/models--org--name/snapshots/<rev>) the repo's name."""
    if folder.parent.name == "snapshots":
        return folder.parent.parent.name.split("--", 1)[-1].replace("--", "/")
    return folder.name


def meta_defaults(folder: Path | None, meta: dict[str, Any], base: dict[str, Any] | None = None) -> ModelDefaults:
    """noisebrush.json's defaults (over `base`) and its few-step path."""
    known = set(ModelDefaults.__dataclass_fields__) - {"few_step"}
    given = meta.get("defaults") if isinstance(meta.get("defaults"), dict) else {}
    fields = {**(base or {}), **{k: v for k, v in given.items() if k in known}}
    return ModelDefaults(**fields, few_step=read_few_step(folder, meta))


def model_defaults(ref: str) -> ModelDefaults:
    """Slider defaults for a model, read without importing torch: its noisebrush.json, else few-step detection."""
    try:
        folder = resolve_model_dir(ref)
    except UserError:
        return ModelDefaults()
    if folder.is_file():
        from noisebrush.engine.flow_single import single_file_defaults

        return single_file_defaults(folder) or ModelDefaults()

    family = flow_family(folder)
    meta = read_model_meta(folder)
    if meta.get("defaults"):  # a file's own defaults win; a flow family's kind of guidance is a fact of the model
        base = {"scheduler": FLOW_SCHEDULER, "guidance_kind": flow_defaults(folder, family).guidance_kind} if family else {}
        return meta_defaults(folder, meta, base)
    # a few-step block holds without slider defaults too: the engine (load_base) reads it either way
    return replace(_detected_defaults(folder, family), few_step=read_few_step(folder, meta))


def _detected_defaults(folder: Path, family: str | None) -> ModelDefaults:
    """Defaults of a folder whose noisebrush.json sets none: by its family, its scheduler and its name."""
    if family is not None:
        return flow_defaults(folder, family)
    found = few_step_defaults(folder) or ModelDefaults()
    try:
        unet = json.loads((folder / "unet" / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return found
    if _family(unet) == "sdxl":  # SDXL is trained at 1024 px
        return replace(found, width=1024, height=1024)
    return found


def _family(unet_config: Any) -> str:
    """SDXL or SD1.5 by a UNet's widths (one that names none counts as SD1.5)."""
    return config_family(unet_config, default="sd15")


FAMILY_NAMES = {"sd15": "SD1.5-family", "sdxl": "SDXL", "sd3": "SD3", "flux": "Flux"}
# diffusers' pipeline names: family prefix + "ControlNet" when there are ControlNets + mode. The inpaint pipelines
# serve both kinds of model: a 9-channel inpainting UNet gets the mask and masked image as input; any other has the
# known latents blended back outside the mask at every step.
PIPELINE_PREFIX = {"sd15": "StableDiffusion", "sdxl": "StableDiffusionXL"}
PIPELINE_MODE = {"txt2img": "Pipeline", "img2img": "Img2ImgPipeline", "inpaint": "InpaintPipeline"}
COMPONENTS = {
    "sd15": ("vae", "text_encoder", "tokenizer", "unet", "scheduler"),
    "sdxl": ("vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "unet", "scheduler"),
    **FLOW_COMPONENTS,
}


def check_controlnet_fits(cn_config: dict, unet_config: Any, vae_factor: int, cn_name: str, base_name: str) -> None:
    """Refuse a ControlNet that cannot drive this base, before any weights are read."""
    # a UNet ControlNet that names no width counts as SD1.5: its widths are checked below
    check_family(config_family(cn_config, default="sd15"), _family(unet_config), cn_name, base_name)
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
    preview: LinearPreview | TinyAutoencoderPreview
    defaults: ModelDefaults
    device: DeviceChoice
    options: LoadOptions = field(default_factory=LoadOptions)
    controlnets: dict[str, Any] = field(default_factory=dict)  # path → ControlNetModel
    loras: dict[str, str] = field(default_factory=dict)  # path → adapter name, loaded into the modules (loras.py)
    ip_adapters: dict[str, Any] = field(default_factory=dict)  # path → LoadedAdapter (reference_attention.py)
    colours: Any = None  # a ColourReader where the model reads colour words as numbers (engine/colour_words.py)

    @property
    def vae_factor(self) -> int:
        return 2 ** (len(self.components["vae"].config.block_out_channels) - 1)

    def controlnet_path(self, kind: str, override: str | None) -> Path:
        if override:
            path = Path(override).expanduser()
            if path.is_file():
                from noisebrush.engine.sources import resolve_source

                return resolve_source(str(path)).path  # refuses pickles, checks the safetensors header
            if not (path / "config.json").is_file():
                raise UserError(f"ControlNet {override}: not a diffusers ControlNet folder (no config.json)")
            return path
        path = (self.folder if self.folder.is_dir() else self.folder.parent) / CONTROLNETS_DIR / kind
        if not (path / "config.json").is_file():
            raise UserError(f"the model {self.name} has no {kind} ControlNet; pick one in the {kind} layer's settings")
        return path

    def controlnet(self, kind: str, override: str | None = None):
        path = self.controlnet_path(kind, override)
        key = str(path.resolve())
        if key not in self.controlnets:
            import diffusers

            single = path.is_file()
            cfg_path = single_file_config("controlnet", path) / "config.json" if single else path / "config.json"
            cfg = read_json_object(cfg_path)
            if self.family in FLOW_FAMILIES:
                check_family(config_family(cfg), self.family, path.name, self.name)
                check_flow_controlnet_fits(cfg, self.components["transformer"].config, path.name, self.name)
            else:
                check_controlnet_fits(cfg, self.components["unet"].config, self.vae_factor, path.name, self.name)
            cls_name = "ControlNetUnionModel" if cfg.get("_class_name") == "ControlNetUnionModel" else "ControlNetModel"
            net_class = getattr(diffusers, NET_CLASS.get(self.family, cls_name))
            try:
                if single:
                    net = net_class.from_single_file(
                        str(path), config=str(cfg_path.parent), local_files_only=True, torch_dtype=self.device.dtype
                    )
                else:
                    net = net_class.from_pretrained(path, torch_dtype=self.device.dtype, local_files_only=True)
            except Exception as exc:  # diffusers raises many kinds for a bad folder
                raise UserError(f"cannot load ControlNet {path}: {first_line(exc)}") from None
            self.controlnets[key] = net.to(self.device.device).eval()
        return self.controlnets[key]

    def pipeline(self, controlnets: list[Any], mode: str, scheduler: Any):
        """A pipeline object over the loaded components (cheap: nothing is copied or moved).

        mode: "txt2img", "img2img" or "inpaint".
        """
        import diffusers

        if self.family in FLOW_FAMILIES:
            name = pipeline_name(self.family, bool(controlnets), mode)
        else:
            union = "Union" if controlnets and type(controlnets[0]).__name__ == "ControlNetUnionModel" else ""
            name = PIPELINE_PREFIX[self.family] + ("ControlNet" + union if controlnets else "") + PIPELINE_MODE[mode]
        cls = getattr(diffusers, name)
        parts = {k: v for k, v in self.components.items() if k != "scheduler"}
        parts["scheduler"] = scheduler
        if self.family == "sd15":
            parts.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        if controlnets:
            one = len(controlnets) == 1 or type(controlnets[0]).__name__ == "ControlNetUnionModel"  # serves them all
            parts["controlnet"] = controlnets[0] if one else controlnets
        from noisebrush.engine.speed import prepare

        prepare(self, controlnets)  # the speed options of self.options, applied once per module
        pipe = cls(**parts)
        pipe.set_progress_bar_config(disable=True)
        offload(pipe, self.options, self.device.device)
        return pipe


def offload(pipe: Any, options: LoadOptions, device: str) -> None:
    """Model offload moves each model to the GPU while it runs; sequential offload each layer (least memory, slowest).
    Both need CUDA (accelerate's hooks); elsewhere the models stay where they are."""
    if device != "cuda":
        return
    if options.sequential_offload:
        pipe.enable_sequential_cpu_offload()
    elif options.cpu_offload:
        pipe.enable_model_cpu_offload()


def single_file_config(role: str, path: Path) -> Path:
    """The bundled config folder for a single-file checkpoint, chosen by what its keys say it is."""
    from noisebrush.engine.catalog import classify_file
    from noisebrush.engine.paths import single_file_configs_dir

    entry = classify_file(path)
    if entry is None or entry.note:
        raise UserError(f"{path.name}: {entry.note if entry else 'not a model file'}")
    if entry.role != role:
        want = "a ControlNet" if role == "controlnet" else "a base model"
        raise UserError(f"{path.name} is not {want} (it looks like a {entry.role} checkpoint)")
    if entry.family not in FAMILY_NAMES:
        raise UserError(f"{path.name}: cannot tell which model family it belongs to")
    folder = single_file_configs_dir() / (f"controlnet-{entry.family}" if role == "controlnet" else entry.family)
    if not folder.is_dir():
        raise UserError(f"the bundled model configs are missing from {folder}; reinstall Noisebrush")
    return folder


def _open_pipeline(path: Path, device: DeviceChoice, extra: dict[str, Any]):
    """A diffusers folder via from_pretrained, a .safetensors checkpoint via from_single_file with bundled configs."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    from noisebrush.engine.paths import clip_tokenizers

    common = dict(torch_dtype=device.dtype, local_files_only=True, safety_checker=None, feature_extractor=None,
                  requires_safety_checker=False)  # fmt: skip
    if path.is_file():
        config = single_file_config("base", path)
        try:
            if config.name == "sdxl":
                return StableDiffusionXLPipeline.from_single_file(str(path), config=str(config), torch_dtype=device.dtype,
                                                                 local_files_only=True, **clip_tokenizers())  # fmt: skip
            return StableDiffusionPipeline.from_single_file(str(path), config=str(config), **common)
        except Exception as exc:  # a checkpoint whose keys or shapes do not match the family's config
            raise UserError(f"cannot load checkpoint {path.name}: {first_line(exc)}") from None
    index = read_json_object(path / "model_index.json")
    if "unet" not in index or "vae" not in index:
        raise UserError(f"{path} is not a Stable Diffusion pipeline folder (model_index.json names no unet/vae)")
    try:
        if "text_encoder_2" in index:  # SDXL
            return StableDiffusionXLPipeline.from_pretrained(path, torch_dtype=device.dtype, local_files_only=True, **extra)
        return StableDiffusionPipeline.from_pretrained(path, **common, **extra)
    except Exception as exc:  # diffusers raises many kinds for a bad folder
        raise UserError(f"cannot load model {path}: {first_line(exc)}") from None


def load_base(ref: str, device: DeviceChoice, options: LoadOptions | None = None) -> LoadedModel:
    options = options or LoadOptions()
    path = resolve_model_dir(ref)
    name = "noisebrush-default" if not ref else (ref if is_hub_ref(ref) else path.name)
    folder = None if path.is_file() else path  # a single file has no folder of extras (preview map, TAESD, defaults)
    meta = read_model_meta(folder) if folder else {}
    extra: dict[str, Any] = {}
    if meta.get("text_encoder") in MINILM_NAMES:
        extra["tokenizer"], extra["text_encoder"] = load_minilm()
    from noisebrush.engine.flow_single import single_file_family

    flow = flow_family(path) if folder else single_file_family(path)
    device = flow_device(flow, device)
    pipe = open_flow_pipeline(path, flow, device.dtype) if flow else _open_pipeline(path, device, extra)
    if not (options.offloads and device.device == "cuda"):
        pipe.to(device.device)
    if options.attention_slicing:
        pipe.enable_attention_slicing()
    if options.vae_tiling:
        pipe.vae.enable_tiling()
    from noisebrush.engine.decode_margin import add_vae_margin, margin_cells

    add_vae_margin(pipe.vae, margin_cells(meta))  # the embedded model's decoder asks for one (engine/decode_margin.py)
    family = flow or _family(pipe.unet.config)
    components = {k: pipe.components[k] for k in COMPONENTS[family]}
    for module in components.values():
        if hasattr(module, "eval"):
            module.eval()
    defaults = meta_defaults(folder, meta)
    from noisebrush.engine.previews import load_preview

    preview = load_preview(folder, family, options.preview_decoder, device.device, device.dtype)
    from noisebrush.engine.colour_words import reader_for

    colours = reader_for(folder, meta)
    return LoadedModel(name, path, family, components, preview, defaults, device, options, colours=colours)


def is_hub_ref(ref: str) -> bool:
    from noisebrush.engine.sources import is_hub_id

    return is_hub_id(ref)


class ModelManager:
    """Keeps the last base model loaded; a different reference replaces it."""

    def __init__(self, device: DeviceChoice, options: LoadOptions | None = None) -> None:
        self.device = device
        self.options = options or LoadOptions()
        self._current: tuple[str, LoadedModel] | None = None

    def is_loaded(self, ref: str) -> bool:
        return self._current is not None and self._current[0] == ref

    def get(self, ref: str) -> LoadedModel:
        if not self.is_loaded(ref):
            self._current = None  # free the old model before loading the new one
            self._current = (ref, load_base(ref, self.device, self.options))
        assert self._current is not None
        return self._current[1]
