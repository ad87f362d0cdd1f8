"""Typed events the engine thread emits. Images own their memory (fresh numpy arrays)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from noisebrush.engine.request import GenerationRequest


@dataclass(frozen=True)
class Started:
    job_id: int
    request: GenerationRequest


@dataclass(frozen=True)
class Progress:
    """A status line while something slow happens before the first step (loading a model)."""

    job_id: int
    message: str


@dataclass(frozen=True)
class Preview:
    job_id: int
    step: int  # 1-based
    total: int
    image: np.ndarray  # HxWx3 uint8 at latent resolution; the GUI scales it
    elapsed_s: float
    box: tuple[int, int, int, int] | None = None  # a tile's preview: where it lands (x, y, w, h in output px)


@dataclass(frozen=True)
class Finished:
    job_id: int
    image: np.ndarray  # HxWx3 uint8
    params: GenerationRequest  # the request with its seed resolved
    elapsed_s: float
    model_name: str


@dataclass(frozen=True)
class Failed:
    job_id: int
    message: str  # one line, for a person


@dataclass(frozen=True)
class Cancelled:
    job_id: int
    at_step: int  # steps completed when it stopped; 0 if it never started


Event = Started | Progress | Preview | Finished | Failed | Cancelled
