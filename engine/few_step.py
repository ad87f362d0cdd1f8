"""A model's few-step path: at a few steps, a distilled LoRA and its own sampler instead of the full schedule.

The embedded model ships one (`training/distill_lcm.py`, an LCM-LoRA): its noisebrush.json says
`"few_step": {"steps": 4, "lora": "fewstep/pytorch_lora_weights.safetensors", "scheduler": "LCM", "guidance": 1}`.
A request for that many steps or fewer takes the path by itself (the CLI's `--steps 4`, live mode's frames); more
steps take the full-quality path. The request is not rewritten: its steps say which path ran, so a saved picture
reopens onto the same path and the same pixels, and raising the steps again gives the user's own sampler and CFG.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class FewStep:
    steps: int  # this many steps or fewer take the path; live mode's frames use this many
    lora: str  # the distilled LoRA's file
    scheduler: str = "LCM"
    guidance: float = 1.0  # distilled in: no second (unconditional) pass per step


def read_few_step(folder: Path | None, meta: dict[str, Any]) -> FewStep | None:
    """noisebrush.json's few_step block, or None where it is absent, malformed or its LoRA file is missing."""
    block = meta.get("few_step")
    if folder is None or not isinstance(block, dict):
        return None
    try:
        steps, lora = int(block["steps"]), (folder / str(block["lora"])).resolve()
        scheduler, guidance = str(block.get("scheduler", "LCM")), float(block.get("guidance", 1.0))
    except (KeyError, TypeError, ValueError):
        return None
    if steps < 1 or not lora.is_file() or not lora.is_relative_to(folder.resolve()):
        return None
    return FewStep(steps, str(lora), scheduler, guidance)

