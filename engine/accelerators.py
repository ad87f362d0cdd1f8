"""Accelerator LoRAs for live mode on ordinary models: Hyper-SD, LCM-LoRA and SDXL-Lightning make a stroke's frame
take a few steps instead of twenty. Each comes with the sampler, steps and guidance its model card asks for
(Krita AI Diffusion's live presets agree); live frames add it to the request, Generate never does.

Known by the file's (or its folder's) name: their weights are ordinary LoRA weights, so the keys only say that a
file is a LoRA and for which family (engine/loras.py); the name says which distillation it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePath

MAX_STEPS = 8
ACCELERATED_FAMILIES = ("sd15", "sdxl")


@dataclass(frozen=True)
class Accelerator:
    name: str  # "Hyper" | "LCM" | "Lightning"
    steps: int
    scheduler: str  # one of engine/schedulers.py's names
    guidance: float  # 1: no CFG

    def describe(self) -> str:
        return f"{self.name} {self.steps} steps"


def _steps(name: str, default: int) -> int:
    m = re.search(r"(\d+)[-_ ]?steps?", name)
    return min(MAX_STEPS, max(1, int(m.group(1)))) if m else default


def accelerator_of(path: str) -> Accelerator | None:
    """The accelerator a LoRA file is, by its name or its folder's (LCM-LoRAs ship as pytorch_lora_weights.safetensors
    in a folder named for them), else None."""
    p = PurePath(path)
    name = f"{p.parent.name}/{p.stem}".lower()
    if re.search(r"hyper[-_ ]?sd", name):
        # the CFG variants keep a low CFG (negative prompts work); the others want none
        return Accelerator("Hyper", _steps(name, 8), "Euler trailing", 3.5 if "cfg" in name else 1.0)
    if re.search(r"lcm[-_ ]?lora", name):
        return Accelerator("LCM", 4, "LCM", 1.0)
    if "lightning" in name and "lora" in name:
        return Accelerator("Lightning", _steps(name, 8), "Euler trailing", 1.0)
    return None


PREFERENCE = ("Hyper", "Lightning", "LCM")  # best pictures at a few steps first (Krita's live default is Hyper)
