"""LoRAs: small weight deltas over a base model, loaded once into its modules and switched per request."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from noisebrush.engine.errors import UserError
from noisebrush.engine.sources import PICKLE_SUFFIXES, check_safetensors, refuse_pickle

LORA_KEY_WORDS = ("lora_", ".lora.", "lora.down", "lora.up", "lora_A", "lora_B")


def looks_like_lora(keys: list[str]) -> bool:
    """A safetensors file of LoRA weights (kohya's `lora_unet_…`, diffusers' `….lora.down…`, peft's `lora_A`)."""
    return bool(keys) and any(any(w in k for w in LORA_KEY_WORDS) for k in keys[:200])


# what a flow-matching LoRA's keys start with once the model prefix is gone (diffusers/peft: dots, kohya: underscores)
FLOW_PREFIXES = ("transformer.", "base_model.model.", "lora_transformer_", "lora_unet_", "diffusion_model.")
FLUX_BLOCKS = ("double_blocks", "single_blocks", "single_transformer_blocks")  # BFL's and diffusers' Flux names
FLUX_WIDTH = 3072  # Flux.1's hidden size; SD3 Medium/3.5 Medium are 1536 wide, SD3.5 Large 2432


def _flow_family(header: dict) -> str | None:
    """ "flux" or "sd3" for a LoRA over a flow transformer, None for a UNet's (whose blocks are down/mid/up)."""
    widths = []
    for key, value in header.items():
        rest = key
        for prefix in FLOW_PREFIXES:
            rest = rest.removeprefix(prefix)
        if rest.startswith(FLUX_BLOCKS):
            return "flux"
        if rest.startswith("joint_blocks"):  # Stability's / kohya's SD3 names
            return "sd3"
        if rest.startswith("transformer_blocks") and key.startswith(("transformer.", "lora_transformer_", "base_model.")):
            if any(w in key for w in ("lora_A", "lora_down", "lora.down")) and isinstance(value, dict):
                widths.extend(value.get("shape", [])[-1:])  # [-1:]: a damaged header's empty shape tells nothing
    if not widths:
        return None
    return "flux" if FLUX_WIDTH in widths else "sd3"  # diffusers' names are the same for both: the width tells


def lora_family(header: dict) -> str:
    """The family a LoRA was trained for: SD3 or Flux by their transformer blocks; SDXL by its second text encoder
    or 2048-wide cross-attention; SD1.5 otherwise."""
    flow = _flow_family(header)
    if flow is not None:
        return flow
    if any("te2" in k or "text_encoder_2" in k for k in header):
        return "sdxl"
    for k, v in header.items():
        if "attn2" in k and "to_k" in k and any(w in k for w in ("lora.down", "lora_down", "lora_A")):
            return "sdxl" if v["shape"][-1:] == [2048] else "sd15"  # [-1:]: an empty shape is no width
    return "sd15"


def check_lora_family(name: str, header: dict, model: Any) -> None:
    """Refuse a LoRA made for another family before loading it, where its keys say so for sure (a flow
    transformer's, or SDXL's); an SD1.5-looking one is left to diffusers, which knows the shapes."""
    from noisebrush.engine.flow import article
    from noisebrush.engine.models import FAMILY_NAMES

    family = lora_family(header)
    sure = family != "sd15" or model.family in ("sd3", "flux")
    if family != model.family and sure:
        raise UserError(f"LoRA {name} is {article(FAMILY_NAMES[family])} LoRA, but {model.name} is "
                        f"{article(FAMILY_NAMES[model.family])} model: it does not fit; choose a LoRA made for it")  # fmt: skip


def adapter_name(path: str) -> str:
    return "nb_" + hashlib.sha1(str(Path(path).resolve()).encode()).hexdigest()[:12]


def apply_loras(pipe: Any, model: Any, loras: tuple) -> None:
    """Make the pipeline's modules carry exactly the requested LoRAs at their weights (engine thread).

    A LoRA is loaded into the base model's modules the first time it is asked for and stays there (switching
    weights is then free); adapters not asked for are switched off. `model.loras` remembers what is loaded.
    """
    loaded: dict[str, str] = model.loras
    for spec in loras:
        if spec.path in loaded:
            continue
        path = Path(spec.path)
        if path.suffix.lower() in PICKLE_SUFFIXES:
            refuse_pickle(path)
        if not path.is_file() or path.suffix.lower() != ".safetensors":
            raise UserError(f"LoRA {path.name}: expected a .safetensors file")
        header = check_safetensors(path)
        if not looks_like_lora([k for k in header if k != "__metadata__"]):
            raise UserError(f"{path.name} is not a LoRA (none of its weights are LoRA weights)")
        check_lora_family(path.name, header, model)
        name = adapter_name(spec.path)
        try:
            pipe.load_lora_weights(str(path), adapter_name=name)
        except Exception as exc:  # a LoRA of another family, or a format diffusers does not know
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UserError(f"LoRA {path.name} does not fit the model {model.name} ({msg[:200]})") from None
        loaded[spec.path] = name
    if not loaded:
        return
    if loras:
        pipe.enable_lora()
        pipe.set_adapters([loaded[s.path] for s in loras], adapter_weights=[s.weight for s in loras])
    else:
        pipe.disable_lora()
