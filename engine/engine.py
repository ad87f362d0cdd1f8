"""The long-lived engine thread: job ids, the queue, latest-wins, cancel and listeners (policy only).

A request with a `tiling` (an upscale and a refine in tiles) is split here, above the backend protocol, by
`engine/tiled_run.py`: its tiles are ordinary jobs put at the front of the queue, so every lane (every server) takes
tiles, and they share the parent's cancel flag, so cancel and latest-wins stop them all within a step.

What runs a job is a Backend (`noisebrush.engine.backends`): the local diffusers one by default. Diffusers
pipelines are not thread-safe, so a backend gets one engine thread unless it says it can run more jobs at once
(`parallel_jobs`: a ComfyUI backend runs one per server). Other threads only enqueue, cancel and listen.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from noisebrush.engine.backends.base import Backend, Stopped
from noisebrush.engine.device import DeviceChoice, LoadOptions
from noisebrush.engine.errors import UserError
from noisebrush.engine.events import Cancelled, Event, Failed, Started
from noisebrush.engine.request import GenerationRequest
from noisebrush.engine.tiled_run import TiledRun

log = logging.getLogger(__name__)
Listener = Callable[[Event], None]
_job_ids = itertools.count(1)  # shared by every Engine: a GUI that switches engines never sees an id twice


@dataclass
class _Job:
    id: int
    request: GenerationRequest | None  # None: only load the model named by `preload`
    preload: str = ""
    cancelled: threading.Event = field(default_factory=threading.Event)
    tile: tuple[TiledRun, int] | None = None  # one tile of a tiled job (request None: the run makes it when taken)

    @property
    def preload_only(self) -> bool:
        return self.request is None and self.tile is None


class Engine:
    """submit(request) → job id; events go to every listener, on the engine thread.

    Without a `backend`, the local diffusers backend runs the jobs, configured by the keyword arguments.
    """

    def __init__(
        self,
        backend: Backend | None = None,
        *,
        preview_interval_s: float = 1 / 30,
        previews: bool = True,
        threads: int | None = None,
        device: DeviceChoice | None = None,
        options: LoadOptions | None = None,
        warm_up: bool = False,  # an app that lives on: load diffusers in the background after the first quick frame
    ) -> None:
        if backend is None:
            from noisebrush.engine.backends.local import LocalBackend

            backend = LocalBackend(preview_interval_s=preview_interval_s, previews=previews, threads=threads,
                                   device=device, options=options, warm_up=warm_up)  # fmt: skip
        self.backend: Backend = backend
        self._queue: deque[_Job] = deque()
        self._running: dict[int, _Job] = {}
        self._cv = threading.Condition()
        self._listeners: list[Listener] = []
        self._stopping = False
        lanes = max(1, int(getattr(backend, "parallel_jobs", 1)))
        self._threads = [threading.Thread(target=self._serve, name=f"noisebrush-engine-{i}", daemon=True)
                         for i in range(lanes)]  # fmt: skip
        self._open_lanes = lanes
        for t in self._threads:
            t.start()

    # --- API for other threads -------------------------------------------------------------
    def add_listener(self, fn: Listener) -> None:
        with self._cv:
            self._listeners.append(fn)

    def remove_listener(self, fn: Listener) -> None:
        with self._cv:
            if fn in self._listeners:
                self._listeners.remove(fn)

    def submit(self, request: GenerationRequest, *, latest_wins: bool = False) -> int:
        """Queue a job. latest_wins: drop every queued job and interrupt the running one within one step."""
        job = _Job(next(_job_ids), request)
        dropped: list[_Job] = []
        with self._cv:
            if self._stopping:
                raise RuntimeError("the engine has shut down")
            if not self.is_alive():  # loudly: a job queued now would never run
                raise RuntimeError("the engine thread has stopped; see the log")
            if latest_wins:
                dropped = [j for j in self._queue if not j.preload_only]
                self._queue = deque(j for j in self._queue if j.preload_only)
                for running in self._running.values():
                    if running.request is not None:
                        running.cancelled.set()
            self._queue.append(job)
            self._cv.notify_all()
        self._drop(dropped)
        return job.id

    def _drop(self, jobs: list[_Job]) -> None:
        for j in jobs:
            if j.tile is not None:
                j.tile[0].tile_stopped(j.tile[1])  # its run ends (Cancelled) once every tile has
            else:
                self._emit(Cancelled(j.id, 0))

    def preload(self, model: str = "") -> None:
        """Load a model in the background so the first Generate does not wait for it."""
        with self._cv:
            self._queue.append(_Job(next(_job_ids), None, preload=model))
            self._cv.notify_all()

    def cancel(self, job_id: int) -> None:
        with self._cv:
            if job_id in self._running:
                self._running[job_id].cancelled.set()
                return
            for j in list(self._queue):
                if j.id == job_id:
                    self._queue.remove(j)
                    break
            else:
                return
        self._emit(Cancelled(job_id, 0))

    def cancel_all(self) -> None:
        with self._cv:
            queued = [j for j in self._queue if not j.preload_only]
            self._queue.clear()
            for running in self._running.values():
                running.cancelled.set()
        self._drop(queued)

    @property
    def busy(self) -> bool:
        with self._cv:
            return bool(self._running) or bool(self._queue)

    def shutdown(self, timeout: float = 30.0) -> bool:
        """Cancel everything and join the threads. Returns True when they are gone."""
        self.cancel_all()
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return not self.is_alive()

    def is_alive(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # --- the engine thread ----------------------------------------------------------------
    def _emit(self, event: Event) -> None:
        with self._cv:
            listeners = list(self._listeners)
        for fn in listeners:
            try:
                fn(event)
            except BaseException:  # any listener, even one raising SystemExit, must not kill the engine thread
                log.exception("engine listener failed")

    def _serve(self) -> None:
        try:
            self._serve_jobs()
        finally:
            with self._cv:
                self._open_lanes -= 1
                last = self._open_lanes == 0
            if last:  # the last engine thread out closes the backend
                try:
                    self.backend.close()
                except Exception:
                    log.exception("closing the backend failed")

    def _serve_jobs(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._stopping:
                    self._cv.wait()
                if self._stopping:
                    return
                job = self._queue.popleft()
                self._running[job.id] = job
            tiles_out = False
            try:
                if job.tile is not None:
                    self._run_tile(job, *job.tile)
                    continue
                if job.request is None:
                    try:
                        self.backend.preload(job.preload)
                    except UserError as exc:
                        log.warning("preload failed: %s", exc)
                    continue
                self._emit(Started(job.id, job.request))
                if job.request.tiling is not None:
                    tiles_out = self._start_tiled(job)
                    continue
                self.backend.run(job.id, job.request, self._emit, job.cancelled)
            except Stopped as stop:
                self._emit(Cancelled(job.id, stop.steps_done))
            except UserError as exc:
                self._emit(Failed(job.id, str(exc)))
            except Exception as exc:
                self._emit(Failed(job.id, _unexpected(job.id, exc)))
            finally:
                if not tiles_out:  # a tiled job stays running (cancellable) until its last tile ends
                    with self._cv:
                        self._running.pop(job.id, None)

    def _start_tiled(self, job: _Job) -> bool:
        """Upscale and plan; queue the tiles first in line. Whether tiles went out (else the run has ended)."""
        assert job.request is not None
        run = TiledRun(job.id, job.request, self._emit, job.cancelled, self._tiled_ended)
        try:
            count = run.prepare()
        except Stopped:
            run.stop()
            return False
        except UserError as exc:
            run.fail(str(exc))
            return False
        except Exception as exc:
            run.fail(_unexpected(job.id, exc))
            return False
        with self._cv:
            self._queue.extendleft(_Job(next(_job_ids), None, cancelled=job.cancelled, tile=(run, i))
                                   for i in reversed(range(count)))  # fmt: skip
            self._cv.notify_all()
        return count > 0

    def _tiled_ended(self, job_id: int) -> None:
        with self._cv:
            self._running.pop(job_id, None)

    def _run_tile(self, job: _Job, run: TiledRun, index: int) -> None:
        if job.cancelled.is_set():
            run.tile_stopped(index)
            return
        try:
            self.backend.run(job.id, run.tile_request(index), run.emit_for(index), job.cancelled)
        except Stopped:
            run.tile_stopped(index)
        except UserError as exc:
            run.tile_failed(index, str(exc))
        except Exception as exc:
            run.tile_failed(index, _unexpected(job.id, exc))
        if run.is_open(index):  # a backend that returned without a result
            run.tile_failed(index, "the backend returned no picture")


def _unexpected(job_id: int, exc: Exception) -> str:
    """A sentence for the person; the class and stack go to the log."""
    log.error("job %d failed:\n%s", job_id, traceback.format_exc())
    first = " ".join(str(exc).split())[:200]
    reason = f": {first}" if first else ""
    return f"the job failed unexpectedly{reason} (the log has the details)"
