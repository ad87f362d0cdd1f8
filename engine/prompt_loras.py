"""A1111's LoRA syntax in a prompt, `<lora:name:0.8>`: taken out of the text and turned into the request's LoRAs.

People paste prompts from A1111 and Civitai with these tags, and A1111 PNGs carry them. A tag names a LoRA by
its file name (with or without `.safetensors`); the weight defaults to 1. Metadata writes them back the same way.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import PurePath

from noisebrush.engine.errors import UserError
from noisebrush.engine.request import LoraSpec

TAG = re.compile(r"<lora:([^:<>]+?)(?::\s*([-+]?(?:\d+\.?\d*|\.\d+)))?\s*>", re.IGNORECASE)


def split_tags(prompt: str) -> tuple[str, list[tuple[str, float]]]:
    """The prompt without its LoRA tags (spacing tidied), and each tag's (name, weight) in order."""
    tags = [(m[1].strip(), float(m[2]) if m[2] else 1.0) for m in TAG.finditer(prompt)]
    if not tags:
        return prompt, []
    text = TAG.sub(" ", prompt)
    text = "\n".join(re.sub(r"[ \t]{2,}", " ", line).strip(" \t") for line in text.splitlines())
    return re.sub(r"\s+([,.])", r"\1", text).strip(), tags


def _stem(name: str) -> str:
    p = PurePath(name.replace("\\", "/"))
    return (p.stem if p.suffix.lower() in (".safetensors", ".pt", ".ckpt", ".bin") else p.name).lower()


def resolve(name: str, available: Iterable[str]) -> str | None:
    """The available LoRA (a path, or a server's file name) that a tag's name means: same path, else same stem."""
    available = list(available)
    if name in available:
        return name
    matches = [a for a in available if _stem(a) == _stem(name)]
    return matches[0] if matches else None


def apply_tags(prompt: str, loras: tuple[LoraSpec, ...], available: Iterable[str] | None,
               where: str = "your models folder") -> tuple[str, tuple[LoraSpec, ...]]:  # fmt: skip
    """(prompt without tags, LoRAs with the tags'): a tag sets the weight of a LoRA already listed, or adds it.

    available=None passes names through unresolved (a server resolves them itself); otherwise a tag naming no
    available LoRA is a UserError, so a typo is not silently ignored.
    """
    text, tags = split_tags(prompt)
    result = list(loras)
    for name, weight in tags:
        path = name if available is None else resolve(name, available)
        if path is None:
            raise UserError(f"the prompt names <lora:{name}>, but there is no LoRA called {name!r} in {where}")
        spec = LoraSpec(path, weight)
        same = [i for i, lo in enumerate(result) if _stem(lo.path) == _stem(path)]
        if same:
            result[same[0]] = spec
        else:
            result.append(spec)
    return text, tuple(result)
