"""A tiled request's life in the Engine, above the backend protocol: upscale the picture, hand out its tiles as
ordinary img2img jobs (the Engine's lanes take them, one per server on ComfyUI), turn their events into the parent
job's (one progress count over tiles × steps, each preview with the box it lands in), blend the results, and end
with one Finished, Failed or Cancelled. Nothing half-done is kept: a cancelled or failed run returns no picture.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

import numpy as np

from noisebrush.engine.backends.base import Emit
from noisebrush.engine.events import Cancelled, Event, Failed, Finished, Preview, Progress
from noisebrush.engine.request import MAX_SEED, GenerationRequest
from noisebrush.engine.tiling import Blend, Tile, default_overlap, plan_tiles, tile_request


def native_tile(model: str, tile: int = 0) -> int:
    """The tile side: `tile` when given, else the model's native size (128 px for the embedded model, 512 for SD1.5,
    1024 for SDXL, SD3 and Flux)."""
    if tile:
        return tile
    from noisebrush.engine.models import model_defaults

    d = model_defaults(model)
    return max(64, max(d.width, d.height) // 8 * 8)


class TiledRun:
    def __init__(self, job_id: int, request: GenerationRequest, emit: Emit, cancelled: threading.Event,
                 ended: Callable[[int], None]) -> None:  # fmt: skip
        """ended(job_id) is called once, after the run's last event."""
        assert request.tiling is not None
        self.job_id, self.cancelled = job_id, cancelled
        self.request = request if request.seed is not None else request.replace(seed=random.randint(0, MAX_SEED))
        self._emit, self._ended = emit, ended
        self._lock = threading.Lock()
        self._t0 = time.monotonic()
        self.tiles: tuple[Tile, ...] = ()
        self._picture: np.ndarray | None = None
        self._blend: Blend | None = None
        self._steps: dict[int, tuple[int, int]] = {}  # tile → (steps done, its total)
        self._open: set[int] = set()  # tiles not yet ended
        self._failure = ""
        self._model_name = ""

    # --- before the tiles: on the lane that took the parent job ----------------------------------------------
    def prepare(self) -> int:
        """Upscale the picture and plan the tiles; how many tiles go out (0: the run has already ended)."""
        from noisebrush.engine.upscale import load_upscaler, upscale

        req, tiling = self.request, self.request.tiling
        assert req.init_image is not None and tiling is not None
        upscaler = None
        if tiling.upscaler:
            self._emit(Progress(self.job_id, f"loading the upscaler {tiling.upscaler.rsplit('/', 1)[-1]}"))
            upscaler = load_upscaler(tiling.upscaler)

        def progress(fraction: float, what: str) -> None:
            self._emit(Progress(self.job_id, f"upscaling: {what} ({fraction:.0%})"))

        picture = upscale(req.init_image, req.width, req.height, upscaler, progress, self.cancelled)
        self._model_name = upscaler.name if upscaler else "Lanczos"
        if req.strength == 0:  # upscale only
            self._finish(picture)
            return 0
        size = native_tile(req.model, tiling.tile)
        overlap = tiling.overlap or default_overlap(size)
        self.tiles = plan_tiles(req.width, req.height, size, min(overlap, size // 2))
        self._picture, self._blend = picture, Blend(req.width, req.height)
        self._open = {t.index for t in self.tiles}
        per_tile = max(1, int(req.steps * req.strength))
        self._steps = {t.index: (0, per_tile) for t in self.tiles}
        self._emit(Preview(self.job_id, 0, self._total(), picture.copy(), self._elapsed()))  # the upscaled picture
        return len(self.tiles)

    # --- the tiles: on any lane ----------------------------------------------------------------------------
    def tile_request(self, index: int) -> GenerationRequest:
        assert self._picture is not None
        return tile_request(self.request, self._picture, self.tiles[index])

    def emit_for(self, index: int) -> Emit:
        """The backend's events for tile `index`, as the parent job's."""
        box = self.tiles[index].box

        def emit(event: Event) -> None:
            if isinstance(event, Preview):
                with self._lock:
                    self._steps[index] = (event.step, event.total)
                    done, total = self._done(), self._total()
                self._emit(Preview(self.job_id, done, total, event.image, self._elapsed(), box))
            elif isinstance(event, Progress):
                self._emit(Progress(self.job_id, f"tile {index + 1} of {len(self.tiles)}: {event.message}"))
            elif isinstance(event, Finished):
                self._tile_finished(index, event)

        return emit

    def _tile_finished(self, index: int, event: Finished) -> None:
        t = self.tiles[index]
        image = event.image
        if image.shape[:2] != (t.height, t.width):
            self.tile_failed(index, f"a {image.shape[1]}×{image.shape[0]} result came back for a {t.width}×{t.height} tile")
            return
        with self._lock:
            if self._blend is None:
                return
            self._blend.add(t, image)
            self._steps[index] = (self._steps[index][1],) * 2
            done, total = self._done(), self._total()
            self._model_name = event.model_name
        self._emit(Preview(self.job_id, done, total, image, self._elapsed(), t.box))
        self._close(index)

    def tile_failed(self, index: int, message: str) -> None:
        with self._lock:
            self._failure = self._failure or f"tile {index + 1} of {len(self.tiles)}: {message}"
        self.cancelled.set()  # the other tiles stop within a step
        self._close(index)

    def tile_stopped(self, index: int) -> None:
        self._close(index)

    def is_open(self, index: int) -> bool:
        with self._lock:
            return index in self._open

    def _close(self, index: int) -> None:
        with self._lock:
            if index not in self._open:
                return
            self._open.discard(index)
            last = not self._open
            blend, self._blend = (self._blend, None) if last else (None, self._blend)
            failure, done = self._failure, self._done()
        if not last:
            return
        self._picture = None
        if failure:
            self._end(Failed(self.job_id, failure))
        elif self.cancelled.is_set() or blend is None:
            self._end(Cancelled(self.job_id, done))
        else:
            self._finish(blend.result())

    def _finish(self, picture: np.ndarray) -> None:
        self._end(Finished(self.job_id, picture, self.request, self._elapsed(), self._model_name))

    def _end(self, event: Event) -> None:
        try:
            self._emit(event)
        finally:
            self._ended(self.job_id)

    def fail(self, message: str) -> None:
        """The run could not start (a bad upscaler, an unreadable model): one Failed event."""
        self._end(Failed(self.job_id, message))

    def stop(self) -> None:
        self._end(Cancelled(self.job_id, 0))

    def _done(self) -> int:
        return sum(d for d, _ in self._steps.values())

    def _total(self) -> int:
        return sum(t for _, t in self._steps.values())

    def _elapsed(self) -> float:
        return time.monotonic() - self._t0
