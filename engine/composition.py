"""Composing a picture by areas: regions now; references and print-size tiling follow the same design.

One idea for all three (issues 26, 27, 28). Each enters the frozen `GenerationRequest` as plain data, is validated
with the rest of the request before any model loads, and is either run by every backend or refused by that backend
with one sentence before anything loads:

- **Region** (here): a painted mask (HxW uint8 at output size, white = the region) and its prompt and negative.
  Locally it is masked cross-attention in one UNet pass (`engine/region_attention.py`); on ComfyUI it is core
  nodes (`CLIPTextEncode` → `ConditioningSetMask` → `ConditioningCombine`, `engine/backends/comfy_workflow.py`).
- **Reference** (next): a picture, a weight, a mode (style / composition / both) and an optional mask, the same
  frozen-image conventions; locally an IP-Adapter loaded once and switched per job like LoRAs, on ComfyUI the
  IPAdapter node pack when `/object_info` shows it, refused with the pack's name when not.
- **Tiles** (next): not a request field but a plan above the backend protocol, like variations: a large picture is
  split into overlapping ordinary img2img requests (the crop of the picture, of every control map and of every
  region mask; references stay whole), which the engine queues so several servers take tiles at once, and whose
  results are blended with feathered weights. So a tile is a request every backend already runs.

How regions are prepared (after Krita AI Diffusion's `process_regions`, whose rules people know):
- an upper region (later in the tuple) is cut out of the lower ones: where regions overlap, the upper one wins;
- a region covering under 2 % of the picture after that is dropped, and says so in a note;
- the whole-picture prompt rules the background (everything no region covers), and its words are added to every
  region's prompt, so style words ("oil painting") reach every area;
- with no background left (regions cover over 95 %), the whole-picture prompt has no area of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from noisebrush.engine.errors import UserError
from noisebrush.engine.request import _frozen_mask, _text

MAX_REGIONS = 8  # each adds a prompt's tokens to every cross-attention; Krita advises at most 5
MAX_REGION_WORDS = 300  # a prompt's words beyond the encoder's window are dropped anyway: 10,000 is a paste accident
MIN_COVERAGE = 0.02
BACKGROUND_MIN = 0.05


@dataclass(frozen=True, eq=False)
class Region:
    """A prompt for one painted area. `mask`: HxW uint8 at output size, white = the region (grey = partly)."""

    mask: np.ndarray
    prompt: str
    negative: str = ""

    def __post_init__(self) -> None:
        _text(self.prompt, "region prompt")
        _text(self.negative, "region negative prompt")
        if not isinstance(self.mask, np.ndarray) or self.mask.ndim not in (2, 3) or self.mask.size == 0:
            raise UserError(f"the mask of the region {self.title!r} is not a picture")
        object.__setattr__(self, "mask", _frozen_mask(self.mask))

    @property
    def title(self) -> str:
        """How the layer panel and messages name it: the prompt's first words."""
        words = self.prompt.split()
        return " ".join(words[:4]) + ("…" if len(words) > 4 else "") if words else "region"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Region):
            return NotImplemented
        return (self.prompt, self.negative) == (other.prompt, other.negative) and np.array_equal(self.mask, other.mask)

    __hash__ = None  # type: ignore[assignment]


def check_regions(regions: tuple[Region, ...], width: int, height: int) -> None:
    """UserError for regions no backend should try: too many, a mask of another size, a runaway prompt."""
    if len(regions) > MAX_REGIONS:
        raise UserError(f"at most {MAX_REGIONS} regions (got {len(regions)}): merge some, or paint fewer")
    for r in regions:
        if not isinstance(r, Region):
            raise UserError("a region must be a Region (a mask and a prompt)")
        if r.mask.shape != (height, width):
            raise UserError(f"the mask of the region {r.title!r} is {r.mask.shape[1]}×{r.mask.shape[0]}, "
                            f"the output {width}×{height}: resize it first")  # fmt: skip
        for text in (r.prompt, r.negative):
            if len(text.split()) > MAX_REGION_WORDS:
                raise UserError(f"the prompt of the region {r.title!r} has {len(text.split())} words; "
                                f"at most {MAX_REGION_WORDS} are read")  # fmt: skip


@dataclass(frozen=True, eq=False)
class PreparedRegion:
    """A region ready for a backend: its weight per pixel (float32 in [0, 1], HxW), the prompt it attends."""

    weight: np.ndarray
    prompt: str
    negative: str


def region_text(prompt: str, whole: str) -> str:
    """A region's prompt with the whole picture's words added (the rule above)."""
    return f"{prompt}, {whole}" if whole.strip() and prompt.strip() else (prompt or whole)


def prepare_regions(regions: tuple[Region, ...], whole_prompt: str, whole_negative: str = ""
                    ) -> tuple[list[PreparedRegion], PreparedRegion | None, list[str]]:  # fmt: skip
    """(the regions that stay, the background (1 - what they cover) for the whole-picture prompt, notes for the
    person). No regions left means: run the plain prompt (nothing to compose), and the background is None."""
    notes: list[str] = []
    if not regions:
        return [], None, notes
    weights = [r.mask.astype(np.float32) / 255.0 for r in regions]
    covered = np.zeros_like(weights[0])
    kept: list[tuple[np.ndarray, Region]] = []
    for w, r in reversed(list(zip(weights, regions))):  # top first: each takes what the ones above left
        own = np.clip(w - covered, 0.0, 1.0) if covered.any() else w
        covered = np.maximum(covered, w)
        if own.mean() < MIN_COVERAGE:
            notes.append(f"the region {r.title!r} covers under {MIN_COVERAGE:.0%} of the picture (or lies under others) "
                         "and is left out")  # fmt: skip
            continue
        kept.append((own, r))
    kept.reverse()
    prepared = [PreparedRegion(w, region_text(r.prompt, whole_prompt), r.negative or whole_negative) for w, r in kept]
    if not prepared:
        return [], None, notes
    return prepared, PreparedRegion(np.clip(1.0 - covered, 0.0, 1.0), whole_prompt, whole_negative), notes


def has_background(background: PreparedRegion | None) -> bool:
    """Whether the whole-picture prompt keeps an area of its own (regions cover under 95 %)."""
    return background is not None and float(background.weight.mean()) >= BACKGROUND_MIN
