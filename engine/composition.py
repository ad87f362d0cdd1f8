"""Composing a picture by areas: regions now; references and print-size tiling follow the same design.

One idea for all three (issues 26, 27, 28). Each enters the frozen `GenerationRequest` as plain data, is validated
with the rest of the request before any model loads, and is either run by every backend or refused by that backend
with one sentence before anything loads:

- **Region** (here): a painted mask (HxW uint8 at output size, white = the region) and its prompt and negative.
  Locally it is masked cross-attention in one UNet pass (`engine/region_attention.py`); on ComfyUI it is core
  nodes (`CLIPTextEncode` → `ConditioningSetMask` → `ConditioningCombine`, `engine/backends/comfy_workflow.py`).
- **Reference** (here): a picture, a weight, a mode (style / composition / both), a start/end range and an optional
  mask, the same frozen-image conventions; locally an IP-Adapter whose weights load once and whose attention is
  installed per job (`engine/reference_attention.py`, files found by `engine/ip_adapters.py`), on ComfyUI the
  IPAdapter node pack when `/object_info` shows it, refused with the pack's name when not.
- **Tiling** (here, the data; `engine/tiling.py` the plan; `engine/tiled_run.py` the run): a request with a
  `Tiling` is a picture (its init image, any size) upscaled to the output size (up to 8192 px a side) by an upscale
  model or Lanczos, then refined in overlapping tiles at the model's native size. The Engine, above the backend
  protocol, splits it into ordinary img2img requests (the crop of the picture, of every control map and of every
  region mask; references stay whole), queues them so several servers take tiles at once, and blends the results
  with smooth weights that sum to one. So a tile is a request every backend already runs, and no backend sees a
  `Tiling`.

How regions are prepared (after Krita AI Diffusion's `process_regions`, whose rules people know):
- an upper region (later in the tuple) is cut out of the lower ones: where regions overlap, the upper one wins;
- a region covering under 2 % of the picture after that is dropped, and says so in a note;
- the whole-picture prompt rules the background (everything no region covers), and its words are added to every
  region's prompt, so style words ("oil painting") reach every area;
- with no background left (regions cover over 95 %), the whole-picture prompt has no area of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from noisebrush.engine.errors import UserError
from noisebrush.engine.request import _finite, _frozen_image, _frozen_mask, _text

if TYPE_CHECKING:
    from noisebrush.engine.request import GenerationRequest

MAX_REGIONS = 8  # each adds a prompt's tokens to every cross-attention; Krita advises at most 5
MAX_REGION_WORDS = 300  # a prompt's words beyond the encoder's window are dropped anyway: 10,000 is a paste accident
MAX_REFERENCES = 4  # each adds an image encoder pass and an attention per cross-attention layer
REFERENCE_MODES = ("style", "composition", "both")
REFERENCE_MAX_WEIGHT = 1.5  # past ~1.2 IP-Adapter copies the reference; 1.5 leaves room to push a weak one
REFERENCE_SIDES = (16, 8192)  # px: the encoder reads 224 px; under 16 there is nothing to read, over 8192 a paste accident
REFERENCE_KEEP = 1024  # px on the long side a reference is kept at (files, autosave): 4× what any encoder reads
TILED_SIDES = (64, 8192)  # px of a tiled request's output: the document's limit; 8192² RGB is 200 MB per buffer
UPSCALE_SOURCE_SIDES = (16, 8192)  # px of the picture to upscale: under 16 there is nothing to upscale
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
class Reference:
    """A picture whose style and/or composition the result follows. `mask`: HxW uint8 at output size (white = where
    it applies) or None for everywhere; `adapter`: an IP-Adapter file to use instead of the one found for the model."""

    image: np.ndarray
    weight: float = 0.8
    mode: str = "both"
    start: float = 0.0
    end: float = 1.0
    mask: np.ndarray | None = None
    adapter: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.image, np.ndarray) or self.image.ndim not in (2, 3) or self.image.size == 0:
            raise UserError("a reference must be a picture")
        check_reference_size(*self.image.shape[:2])
        try:
            object.__setattr__(self, "image", _frozen_image(self.image))
        except ValueError:
            raise UserError("a reference must be an RGB picture") from None
        if self.mask is not None:
            object.__setattr__(self, "mask", _frozen_mask(self.mask))
        if self.mode not in REFERENCE_MODES:
            raise UserError(f"a reference's mode is one of {', '.join(REFERENCE_MODES)} (got {self.mode!r})")
        for name in ("weight", "start", "end"):
            _finite(getattr(self, name), f"reference {name}")
        if not 0 <= self.weight <= REFERENCE_MAX_WEIGHT:
            raise UserError(f"a reference's weight must be from 0 to {REFERENCE_MAX_WEIGHT:g} (got {self.weight:g})")
        if not 0.0 <= self.start <= self.end <= 1.0:
            raise UserError("a reference's start/end must satisfy 0 ≤ start ≤ end ≤ 1")
        _text(self.adapter, "IP-Adapter path")

    @property
    def active(self) -> bool:
        """Whether it changes the result: weight 0 (or an empty range) is the same as no reference."""
        return self.weight > 0 and self.end > self.start and (self.mask is None or bool(self.mask.any()))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Reference):
            return NotImplemented
        plain = ("weight", "mode", "start", "end", "adapter")
        same_mask = (self.mask is None) == (other.mask is None) and (self.mask is None or np.array_equal(self.mask, other.mask))
        return all(getattr(self, n) == getattr(other, n) for n in plain) and same_mask and np.array_equal(self.image, other.image)

    __hash__ = None  # type: ignore[assignment]


def check_reference_size(h: int, w: int) -> None:
    low, high = REFERENCE_SIDES
    if min(h, w) < low or max(h, w) > high:
        fix = "scale it down" if max(h, w) > high else "enlarge it"
        raise UserError(f"a reference picture of {w}×{h} px cannot be used: it must be {low} to {high} px on "
                        f"each side (it is read at 224 px), so {fix}")  # fmt: skip


def reference_picture(image: np.ndarray) -> np.ndarray:
    """A picture as a reference keeps it: checked, then at most REFERENCE_KEEP px on its long side."""
    from PIL import Image

    check_reference_size(*image.shape[:2])
    h, w = image.shape[:2]
    if max(h, w) <= REFERENCE_KEEP:
        return image
    scale = REFERENCE_KEEP / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(np.ascontiguousarray(image[..., :3])).resize(size, Image.Resampling.LANCZOS))


def check_references(references: tuple[Reference, ...], width: int, height: int) -> None:
    """UserError for references no backend should try: too many, a mask of another size."""
    if len(references) > MAX_REFERENCES:
        raise UserError(f"at most {MAX_REFERENCES} reference pictures (got {len(references)})")
    for i, r in enumerate(references, 1):
        if not isinstance(r, Reference):
            raise UserError("a reference must be a Reference (a picture, a weight and a mode)")
        if r.mask is not None and r.mask.shape != (height, width):
            raise UserError(f"the mask of reference {i} is {r.mask.shape[1]}×{r.mask.shape[0]}, the output "
                            f"{width}×{height}: resize it first")  # fmt: skip


@dataclass(frozen=True)
class Tiling:
    """Upscale the request's init image to its width×height, then refine it in tiles with its prompt at its strength
    (strength 0: upscale only). `upscaler`: an upscale model file (ESRGAN, SwinIR, DAT… read by spandrel), "" for
    Lanczos; `tile`: px of a tile side, 0 for the model's native size; `overlap`: px, 0 for 3/8 of a tile;
    `controlnet`: a tile ControlNet (SD1.5 tile, SDXL tile or an SDXL ProMax Union; a server's file name on
    ComfyUI) that keeps each refined tile faithful to its source, at `controlnet_weight`; "" for none."""

    upscaler: str = ""
    tile: int = 0
    overlap: int = 0
    controlnet: str = ""
    controlnet_weight: float = 0.8

    def __post_init__(self) -> None:
        _text(self.upscaler, "upscaler path")
        for name in ("tile", "overlap"):
            if not isinstance(getattr(self, name), int) or isinstance(getattr(self, name), bool):
                raise UserError(f"the tile {name} must be a whole number of px (got {getattr(self, name)!r})")
        if self.tile and (self.tile % 8 or not 64 <= self.tile <= 2048):
            raise UserError(f"a tile must be a multiple of 8 from 64 to 2048 px (got {self.tile})")
        if self.overlap < 0 or (self.tile and self.overlap > self.tile // 2):
            raise UserError(f"the tile overlap must be from 0 to half a tile (got {self.overlap} px)")
        _text(self.controlnet, "tile ControlNet")
        if not 0 <= _finite(self.controlnet_weight, "tile ControlNet weight") <= 2:
            raise UserError(f"the tile ControlNet's weight must be from 0 to 2 (got {self.controlnet_weight:g})")


def check_upscale_source(h: int, w: int) -> None:
    low, high = UPSCALE_SOURCE_SIDES
    if min(h, w) < low or max(h, w) > high:
        fix = "scale it down first" if max(h, w) > high else "draw or open a larger one"
        raise UserError(f"a {w}×{h} px picture cannot be upscaled: it must be {low} to {high} px on each side, so {fix}")


def check_tiled(request: GenerationRequest) -> None:
    """UserError for a tiled request no backend should try (the rest of `validate` checks the plain fields)."""
    low, high = TILED_SIDES
    for name in ("width", "height"):
        v = getattr(request, name)
        if not isinstance(v, int) or v % 8 or not low <= v <= high:
            raise UserError(f"an upscaled picture's {name} must be a multiple of 8 from {low} to {high} px (got {v})")
    if request.init_image is None:
        raise UserError("an upscale needs a picture to start from")
    check_upscale_source(*request.init_image.shape[:2])
    if request.mask is not None:
        raise UserError("a full-size refine repaints the whole picture: clear the inpaint mask, or inpaint at the "
                        "model's size")  # fmt: skip


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
