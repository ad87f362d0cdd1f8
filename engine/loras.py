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
