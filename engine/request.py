"""The immutable generation request, captured once on the GUI thread (or by the CLI)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from noisebrush.engine.controls import get_kind
from noisebrush.engine.errors import UserError

if TYPE_CHECKING:
    from noisebrush.engine.composition import Reference, Region, Tiling

# The one place for the ranges every front end (GUI, CLI, files) is held to.
MAX_SEED = 2**32 - 1  # A1111's range; -1 in their files means "random"
MIN_SIZE, MAX_SIZE = 64, 2048  # px; beyond 2048 a step takes minutes and memory runs out on most machines
MAX_STEPS = 200
MAX_GUIDANCE = 30.0
MAX_WEIGHT = 2.0
MAX_FEATHER = 256
MAX_LORAS = 8


def _finite(value: float, what: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise UserError(f"{what} must be a finite number (got {value!r})")
    return float(value)


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise UserError(f"the {what} must be text (got {type(value).__name__})")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise UserError(f"the {what} is not valid text (it holds bytes that are not UTF-8)") from None
    return value


def _frozen_image(image: np.ndarray | None) -> np.ndarray | None:
    """A private read-only RGB uint8 copy, so nobody can paint into a request after capture."""
    if image is None:
        return None
    arr = np.array(image, dtype=np.uint8, copy=True)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"images must be HxWx3 uint8, got shape {arr.shape}")
    arr.flags.writeable = False
    return arr


def _frozen_mask(mask: np.ndarray | None) -> np.ndarray | None:
    """A private read-only HxW uint8 copy; an RGB(A) mask counts its brightest channel."""
    if mask is None:
        return None
    arr = np.array(mask, copy=True)
    if arr.ndim == 3:
        arr = arr[..., :3].max(axis=2)
    if arr.ndim != 2:
        raise ValueError(f"a mask must be HxW, got shape {arr.shape}")
    arr = arr.astype(np.uint8)
    arr.flags.writeable = False
    return arr


def _same_image(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and np.array_equal(a, b))


@dataclass(frozen=True, eq=False)
class ControlSpec:
    """One control map at output size, in its kind's convention (see noisebrush.engine.controls)."""

    kind: str
    image: np.ndarray
    weight: float = 1.0
    start: float = 0.0
    end: float = 1.0
    model: str | None = None  # a ControlNet to use instead of the base model's own for this kind

    def __post_init__(self) -> None:
        get_kind(self.kind)  # raises UserError for a kind nobody registered
        object.__setattr__(self, "image", _frozen_image(self.image))
        for name in ("weight", "start", "end"):
            _finite(getattr(self, name), f"{self.kind} control: {name}")
        if not 0.0 <= self.start <= self.end <= 1.0:
            raise UserError(f"{self.kind} control: start/end must satisfy 0 ≤ start ≤ end ≤ 1")
        if not 0 <= self.weight <= MAX_WEIGHT:
            raise UserError(f"{self.kind} control: weight must be between 0 and {MAX_WEIGHT:g} (got {self.weight:g})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ControlSpec):
            return NotImplemented
        return (self.kind, self.weight, self.start, self.end, self.model) == (
            other.kind,
            other.weight,
            other.start,
            other.end,
            other.model,
        ) and _same_image(self.image, other.image)

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True)
class LoraSpec:
    """A LoRA file and how strongly it applies (0 is as if it were not there; negative subtracts it)."""

    path: str
    weight: float = 1.0

    def __post_init__(self) -> None:
        _text(self.path, "LoRA path")
        if not self.path:
            raise UserError("a LoRA needs a file")
        if not -MAX_WEIGHT <= _finite(self.weight, f"LoRA {self.path} weight") <= MAX_WEIGHT:
            raise UserError(f"a LoRA weight must be between {-MAX_WEIGHT:g} and {MAX_WEIGHT:g} (got {self.weight:g})")


@dataclass(frozen=True, eq=False)
class GenerationRequest:
    prompt: str
    negative_prompt: str = ""
    controls: tuple[ControlSpec, ...] = field(default_factory=tuple)
    steps: int = 20
    guidance: float = 5.0
    seed: int | None = None  # None: the engine draws one and reports it in `finished`
    width: int = 128
    height: int = 128
    scheduler: str = "DPM++ 2M"
    init_image: np.ndarray | None = None
    strength: float = 0.75
    model: str = ""  # "" is the embedded default model; else a folder, file or Hub id
    mask: np.ndarray | None = None  # HxW uint8, white = repaint (needs init_image); the rest keeps its pixels
    feather: int = 0  # px of soft edge where the repainted region meets the kept one
    loras: tuple[LoraSpec, ...] = field(default_factory=tuple)
    regions: tuple[Region, ...] = field(default_factory=tuple)  # a prompt per painted area (engine/composition.py)
    references: tuple[Reference, ...] = field(default_factory=tuple)  # pictures to follow (engine/composition.py)
    tiling: Tiling | None = None  # upscale the init image to width×height and refine it in tiles (engine/tiling.py)

    def __post_init__(self) -> None:
        object.__setattr__(self, "controls", tuple(self.controls))
        object.__setattr__(self, "regions", tuple(self.regions))
        object.__setattr__(self, "references", tuple(self.references))
        object.__setattr__(self, "loras", tuple(self.loras))
        object.__setattr__(self, "init_image", _frozen_image(self.init_image))
        object.__setattr__(self, "mask", _frozen_mask(self.mask))

    @property
    def mode(self) -> str:
        """ "txt2img", "img2img" (an init image) or "inpaint" (an init image and a mask)."""
        if self.init_image is None:
            return "txt2img"
        return "inpaint" if self.mask is not None else "img2img"

    def validate(self) -> None:
        """Raise UserError for settings no pipeline can run, or that would run out of time or memory."""
        _text(self.prompt, "prompt")
        _text(self.negative_prompt, "negative prompt")
        if not isinstance(self.steps, int) or not 1 <= self.steps <= MAX_STEPS:
            raise UserError(f"steps must be between 1 and {MAX_STEPS} (got {self.steps})")
        if not 0 <= _finite(self.guidance, "guidance") <= MAX_GUIDANCE:
            raise UserError(f"guidance must be between 0 and {MAX_GUIDANCE:g} (got {self.guidance:g})")
        if self.seed is not None and (not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED):
            raise UserError(f"the seed must be a whole number from 0 to {MAX_SEED} (got {self.seed})")
        if self.tiling is not None:
            from noisebrush.engine.composition import Tiling, check_tiled

            if not isinstance(self.tiling, Tiling):
                raise UserError("tiling must be a Tiling (an upscaler, a tile size and an overlap)")
            check_tiled(self)
        for name in ("width", "height"):
            v = getattr(self, name)
            if self.tiling is None and (not isinstance(v, int) or v % 8 or not MIN_SIZE <= v <= MAX_SIZE):
                raise UserError(f"{name} must be a multiple of 8 from {MIN_SIZE} to {MAX_SIZE} px (got {v})")
        if not 0.0 <= _finite(self.strength, "strength") <= 1.0 or (self.strength == 0 and self.tiling is None):
            raise UserError(f"strength must be in (0, 1] (got {self.strength})")
        for name, image in (("init image", None if self.tiling else self.init_image), ("mask", self.mask)):
            if image is not None and image.shape[:2] != (self.height, self.width):
                raise UserError(f"the {name} is {image.shape[1]}×{image.shape[0]}, the output {self.width}×{self.height}")
        if self.mask is not None and self.init_image is None:
            raise UserError("a mask needs an init image: the picture whose masked region is repainted")
        if len(self.loras) > MAX_LORAS or len({lo.path for lo in self.loras}) != len(self.loras):
            raise UserError(f"at most {MAX_LORAS} LoRAs, each once")
        if not isinstance(self.feather, int) or not 0 <= self.feather <= MAX_FEATHER:
            raise UserError(f"feather must be from 0 to {MAX_FEATHER} px (got {self.feather})")
        for c in self.controls:
            if c.image.shape[:2] != (self.height, self.width):
                raise UserError(
                    f"the {c.kind} map is {c.image.shape[1]}×{c.image.shape[0]}, "
                    f"the output {self.width}×{self.height}: resize it first"
                )
        kinds = [c.kind for c in self.controls]
        if len(set(kinds)) != len(kinds):
            raise UserError("each control kind may be used once per request")
        if self.regions:
            from noisebrush.engine.composition import check_regions

            check_regions(self.regions, self.width, self.height)
        if self.references:
            from noisebrush.engine.composition import check_references

            check_references(self.references, self.width, self.height)

    def active_controls(self) -> tuple[ControlSpec, ...]:
        """Controls that change the result: a weight of 0 is the same as leaving the control out."""
        return tuple(c for c in self.controls if c.weight > 0 and c.end > c.start)

    def active_references(self) -> tuple[Reference, ...]:
        """References that change the result (weight 0 is the same as leaving the reference out)."""
        return tuple(r for r in self.references if r.active)

    def replace(self, **changes: object) -> GenerationRequest:
        return dataclasses.replace(self, **changes)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GenerationRequest):
            return NotImplemented
        plain = [f.name for f in dataclasses.fields(self) if f.name not in ("controls", "init_image", "mask")]
        return (
            all(getattr(self, n) == getattr(other, n) for n in plain)
            and self.controls == other.controls
            and _same_image(self.init_image, other.init_image)
            and _same_image(self.mask, other.mask)
        )

    __hash__ = None  # type: ignore[assignment]
