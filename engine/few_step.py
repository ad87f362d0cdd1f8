"""A model's few-step path: at a few steps, its own sampler and guidance (and a distilled LoRA, where it has one)
instead of the person's sampler and CFG, which need many steps.

The embedded model's noisebrush.json says `"few_step": {"steps": 4, "scheduler": "LCM", "guidance": 1}`: LCM's
multistep consistency sampling (each step predicts x0 and noises it again to the next step's level) with no CFG,
so one UNet pass a step. A block may name `"lora": "<file in the model folder>"`, an LCM-LoRA from
training/distill_lcm.py; the one distilled for the embedded model measured no better than none (model card).
A request for that many steps or fewer takes the path by itself (the CLI's `--steps 4`, live mode's frames); more
steps take the full-quality path. The request is not rewritten: its steps say which path ran, so a saved picture
reopens onto the same path and the same pixels, and raising the steps again gives the person's sampler and CFG.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class FewStep:
    steps: int  # this many steps or fewer take the path; live mode's frames use this many
    lora: str | None = None  # a distilled LoRA's file, applied at weight 1
    scheduler: str = "LCM"
    guidance: float = 1.0  # 1: no CFG, so no second (unconditional) pass per step


def read_few_step(folder: Path | None, meta: dict[str, Any]) -> FewStep | None:
    """noisebrush.json's few_step block, or None where it is absent, malformed or names a LoRA file that is missing
    or outside the model folder."""
    block = meta.get("few_step")
    if folder is None or not isinstance(block, dict):
        return None
    try:
        steps = int(block["steps"])
        lora = (folder / str(block["lora"])).resolve() if "lora" in block else None
        scheduler, guidance = str(block.get("scheduler", "LCM")), float(block.get("guidance", 1.0))
    except (KeyError, TypeError, ValueError):
        return None
    if steps < 1 or (lora is not None and not (lora.is_file() and lora.is_relative_to(folder.resolve()))):
        return None
    return FewStep(steps, str(lora) if lora else None, scheduler, guidance)
