"""The Backend protocol: what the Engine needs from whatever runs a job (diffusers here, a ComfyUI server there).

The Engine owns the policy (job ids, the queue, latest-wins, cancel, listeners); a backend only runs one job at a
time on the engine thread and reports through the typed events of `noisebrush.engine.events`. Nothing here imports
torch or diffusers, so the Engine and the GUI can hold a backend without loading either.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from noisebrush.engine.events import Event
from noisebrush.engine.request import GenerationRequest

Emit = Callable[[Event], None]


class Stopped(Exception):
    """Raised by a backend when `cancelled` is set: the Engine reports Cancelled(job, steps_done)."""

    def __init__(self, steps_done: int) -> None:
        super().__init__(steps_done)
        self.steps_done = steps_done


@dataclass(frozen=True)
class ModelInfo:
    """One model a backend can run, as a picker shows it."""

    ref: str  # what GenerationRequest.model / ControlSpec.model take
    title: str
    role: str  # "base" | "controlnet" | "lora" | "ip-adapter" | "upscaler"
    family: str  # "sd15" | "sdxl" | …
    control_kind: str | None = None  # ControlNets: the kind their file name says, None when it says none
    control_kinds: tuple[str, ...] | None = None  # base models: the kinds they ship a ControlNet for (None: unknown)
    source: str = "local"  # the backend's name (a server's name for a remote one)


@runtime_checkable
class Backend(Protocol):
    name: str

    def run(self, job_id: int, request: GenerationRequest, emit: Emit, cancelled: threading.Event) -> None:
        """Run one job on the engine thread: emit Progress/Preview events, then Finished.

        Raise Stopped when `cancelled` is set (checked at least once a step), UserError for bad input.
        """

    def preload(self, model: str) -> None:
        """Load a model so that the first job does not wait for it (engine thread). Raise UserError if it cannot."""

    def list_models(self, folder: str | None = None) -> list[ModelInfo]:
        """The models this backend can run; `folder` is where a local backend looks (others ignore it).

        May be slow (a folder scan, a server call): call it off the GUI thread.
        """

    def close(self) -> None:
        """Free what the backend holds; called once on the engine thread when the Engine shuts down."""
