"""Single-file SD3/SD3.5 and Flux.1 checkpoints: which parts a file holds, which bundled config folder fits it, and
opening it offline with diffusers' from_single_file.

Many such files hold the transformer alone (flux1-dev.safetensors, sd3.5_large.safetensors, every GGUF); they run
with the text encoders and VAE of a diffusers folder of the family found on this computer (engine/companions.py), and
without one are named with what they lack and where to get it rather than half-loaded. Files that carry
everything (ComfyUI's all-in-one checkpoints, sd3_medium_incl_clips*.safetensors) load with the configs in
assets/configs/<variant> and the tokenizers bundled once (CLIP in sd15/tokenizer, T5 in t5-tokenizer).
No torch at import: the catalog reads files through here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from noisebrush.engine.errors import UserError, first_line
from noisebrush.engine.paths import clip_tokenizers

# where each part lives in an original-layout (ComfyUI / Stability) checkpoint
PART_PREFIXES = {
    "vae": ("first_stage_model.", "vae."),
    "clip_l": ("text_encoders.clip_l.",),
    "clip_g": ("text_encoders.clip_g.",),
    "t5": ("text_encoders.t5xxl.",),
}
PART_TITLES = {"vae": "VAE", "clip_l": "CLIP-L", "clip_g": "CLIP-G", "t5": "T5-XXL"}
NEEDED = {"sd3": ("vae", "clip_l", "clip_g"), "flux": ("vae", "clip_l", "t5")}  # SD3 runs without T5, as diffusers allows
FLUX_IN_CHANNELS = 64  # Fill (384) and Depth/Canny (128) take extra image channels: other pipelines


def file_parts(keys: list[str]) -> set[str]:
    """The parts besides the transformer that a checkpoint's keys hold."""
    return {part for part, prefixes in PART_PREFIXES.items() if any(k.startswith(prefixes) for k in keys)}


def lacking(family: str, keys: list[str]) -> list[str]:
    """The parts a file lacks to run alone (all of them for a transformer-only file)."""
    return [p for p in NEEDED[family] if p not in file_parts(keys)]


def missing_note(family: str, keys: list[str]) -> str:
    """Why a single-file base model cannot run alone ("" when it can): the parts it lacks, and the way out."""
    from noisebrush.engine.catalog import FAMILY_TITLES
    from noisebrush.engine.companions import HOW_TO_GET

    lacking_parts = lacking(family, keys)
    if not lacking_parts:
        return ""
    encoders = [PART_TITLES[p] for p in lacking_parts if p != "vae"]
    items = ["VAE"] if "vae" in lacking_parts else []
    if encoders:
        items.append(f"text encoder{'s' if len(encoders) > 1 else ''} ({', '.join(encoders)})")
    return f"{FAMILY_TITLES[family]} transformer only, without its {' and '.join(items)}: {HOW_TO_GET[family]}"


def variant(family: str, header: dict) -> str:
    """The bundled config folder for a file: SD3 medium, SD3.5 medium (MMDiT-X: second attention), SD3.5 large
    (38 blocks), Flux dev (guidance embedding) or schnell."""
    keys = [k.removeprefix("model.diffusion_model.") for k in header if k != "__metadata__"]
    if family == "sd3":
        if any(k.startswith("joint_blocks.37.") for k in keys):
            return "sd35-large"
        return "sd35-medium" if any(".x_block.attn2." in k for k in keys) else "sd3"
    return "flux-dev" if any(k.startswith("guidance_in.") for k in keys) else "flux-schnell"


def unsupported_flux(header: dict) -> str:
    """Flux Fill and Depth/Canny checkpoints take image channels the text-to-image pipelines do not feed."""
    for key in ("img_in.weight", "model.diffusion_model.img_in.weight"):
        shape = header.get(key, {}).get("shape") if isinstance(header.get(key), dict) else None
        if shape and len(shape) == 2 and shape[1] != FLUX_IN_CHANNELS:
            return f"a Flux Fill or Depth/Canny checkpoint ({shape[1]} input channels): not supported yet"
    return ""


def read_header(path: Path) -> dict:
    """A checkpoint's tensor table: the safetensors header, or a GGUF file's in the same shape (engine/gguf_files.py)."""
    from noisebrush.engine.gguf_files import gguf_header, is_gguf
    from noisebrush.engine.sources import check_safetensors

    return gguf_header(path) if is_gguf(path) else check_safetensors(path)


def single_file_family(path: Path) -> str | None:
    """ "sd3" or "flux" for a flow-matching base checkpoint file, else None (an SD1.5/SDXL file, or not a model)."""
    from noisebrush.engine.catalog import classify_file
    from noisebrush.engine.flow import FLOW_FAMILIES

    entry = classify_file(path)
    if entry is None or entry.family not in FLOW_FAMILIES or entry.role != "base":
        return None
    if entry.note:
        raise UserError(f"{path.name}: {entry.note}")
    return entry.family


def single_file_defaults(path: Path) -> Any:
    """Slider defaults for a flow checkpoint file (None for others): Flux schnell's guidance is unused.

    Read from the header alone: the GUI asks on its own thread, where a companion search does not belong."""
    from noisebrush.engine.catalog import flow_file
    from noisebrush.engine.flow import family_defaults

    try:
        header = read_header(path)
    except (UserError, OSError):
        return None
    flow = flow_file([k for k in header if k != "__metadata__"])
    if flow is None or flow[1] != "base":
        return None
    family = flow[0]
    if family == "sd3":
        return family_defaults(family, "cfg")
    return family_defaults(family, "none" if variant(family, header) == "flux-schnell" else "distilled")


def tokenizers(configs: Path, family: str, parts: set[str]) -> dict[str, Any]:
    """The tokenizers, bundled once for all variants: CLIP-L, OpenCLIP-G and T5."""
    from transformers import T5TokenizerFast

    t5 = configs / "t5-tokenizer"
    if not t5.is_dir():
        raise UserError(f"the bundled tokenizers are missing from {t5}; reinstall Noisebrush")
    found: dict[str, Any] = clip_tokenizers()
    if family == "flux":
        found["tokenizer_2"] = T5TokenizerFast.from_pretrained(t5)
        return found
    if "t5" in parts:
        found["tokenizer_3"] = T5TokenizerFast.from_pretrained(t5)
    else:  # an SD3 checkpoint with its CLIPs only: T5 stays off, as in SD3's own "without T5" setup
        found.update(text_encoder_3=None, tokenizer_3=None)
    return found


def open_single_file(path: Path, family: str, dtype: Any):
    """A flow pipeline from a checkpoint file, with the bundled configs of its variant and no network."""
    import diffusers

    from noisebrush.engine.companions import find_companion, open_with_companion
    from noisebrush.engine.flow import PIPELINES
    from noisebrush.engine.gguf_files import is_gguf
    from noisebrush.engine.paths import single_file_configs_dir

    header = read_header(path)
    keys = [k for k in header if k != "__metadata__"]
    configs = single_file_configs_dir()
    folder = configs / variant(family, header)
    if not (folder / "model_index.json").is_file():
        raise UserError(f"the bundled model configs are missing from {folder}; reinstall Noisebrush")
    try:
        if lacking(family, keys):  # a transformer-only file (GGUF ones always): the rest from a companion folder
            companion = find_companion(path, family)
            if companion is None:
                raise UserError(f"{path.name}: {missing_note(family, keys)}")
            return open_with_companion(path, family, folder, companion.path, dtype, is_gguf(path))
        parts = tokenizers(configs, family, file_parts(keys))
        cls = getattr(diffusers, PIPELINES[(family, False, "txt2img")])
        return cls.from_single_file(str(path), config=str(folder), local_files_only=True, torch_dtype=dtype, **parts)
    except UserError:
        raise
    except Exception as exc:  # a checkpoint whose keys or shapes do not match its variant's config
        raise UserError(f"cannot load checkpoint {path.name}: {first_line(exc)}") from None
