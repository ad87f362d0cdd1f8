"""The immutable generation request, captured once on the GUI thread (or by the CLI)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from noisebrush.engine.controls import get_kind
from noisebrush.engine.errors import UserError


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
        if not 0.0 <= self.start <= self.end <= 1.0:
            raise UserError(f"{self.kind} control: start/end must satisfy 0 ≤ start ≤ end ≤ 1")
        if self.weight < 0:
            raise UserError(f"{self.kind} control: weight must be ≥ 0")

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

    def __post_init__(self) -> None:
        object.__setattr__(self, "controls", tuple(self.controls))
        object.__setattr__(self, "init_image", _frozen_image(self.init_image))

    def validate(self) -> None:
        """Raise UserError for settings no pipeline can run."""
        if self.steps < 1:
            raise UserError(f"steps must be at least 1 (got {self.steps})")
        if self.guidance < 0:
            raise UserError(f"guidance must be ≥ 0 (got {self.guidance})")
        if self.width % 8 or self.height % 8 or self.width < 8 or self.height < 8:
            raise UserError(f"width and height must be positive multiples of 8 (got {self.width}×{self.height})")
        if not 0.0 < self.strength <= 1.0:
            raise UserError(f"strength must be in (0, 1] (got {self.strength})")
        for c in self.controls:
            if c.image.shape[:2] != (self.height, self.width):
                raise UserError(
                    f"the {c.kind} map is {c.image.shape[1]}×{c.image.shape[0]}, "
                    f"the output {self.width}×{self.height}: resize it first"
                )
        kinds = [c.kind for c in self.controls]
        if len(set(kinds)) != len(kinds):
            raise UserError("each control kind may be used once per request")

    def active_controls(self) -> tuple[ControlSpec, ...]:
        """Controls that change the result: a weight of 0 is the same as leaving the control out."""
        return tuple(c for c in self.controls if c.weight > 0 and c.end > c.start)

    def replace(self, **changes: object) -> GenerationRequest:
        return dataclasses.replace(self, **changes)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GenerationRequest):
            return NotImplemented
        plain = [f.name for f in dataclasses.fields(self) if f.name not in ("controls", "init_image")]
        return (
            all(getattr(self, n) == getattr(other, n) for n in plain)
            and self.controls == other.controls
            and _same_image(self.init_image, other.init_image)
        )

    __hash__ = None  # type: ignore[assignment]
