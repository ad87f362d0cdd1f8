"""Generation jobs: submit and cancel, live scheduling, and engine events into the state model.

The GUI holds only the Engine's API (through the bridge) and the Backend protocol: which backend runs the job
(local diffusers, a server) makes no difference here.
"""

from __future__ import annotations

import time

import numpy as np
from PySide6.QtCore import QObject, QRectF, QTimer, Signal
from PySide6.QtGui import QImage, QPainter

from noisebrush.engine.errors import UserError
from noisebrush.engine.events import Finished
from noisebrush.gui.document import LAYER_REQUEST_FIELDS
from noisebrush.gui.engine_bridge import EngineBridge, to_qimage
from noisebrush.gui.state import NOT_IN_REQUEST, AppState

LIVE_MAX_WAIT_S = 0.4  # while a stroke or a joint drag goes on without pause, still regenerate this often


class LiveScheduler(QObject):
    """Debounce with a deadline: `fire` comes `delay_ms` after the last poke, or LIVE_MAX_WAIT_S after the first
    of a continuous run of pokes (a stroke being drawn, a joint being dragged), whichever is sooner."""

    fire = Signal()

    def __init__(self, delay_ms: int, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(delay_ms)
        self.timer.timeout.connect(self.fire)
        self._pending_since = 0.0

    def poke(self) -> None:
        now = time.perf_counter()
        if not self.timer.isActive():
            self._pending_since = now
        if now - self._pending_since >= LIVE_MAX_WAIT_S:
            self.timer.stop()
            self.fire.emit()
            return
        self.timer.start()

    def frame_done(self) -> None:
        """The engine finished a frame: a change already waiting starts the next one now, not after the debounce,
        so a stroke that goes on gets frames back to back when they are fast (the deadline covers slow ones)."""
        if self.timer.isActive():
            self.timer.stop()
            self.fire.emit()

    def stop(self) -> None:
        self.timer.stop()


class Jobs(QObject):
    status = Signal(str, int)  # message, ms to show it (0: until replaced)
    error = Signal(str)
    progress = Signal(int, int, object)  # step, total, seconds left (None when unknown)
    running = Signal(bool)
    succeeded = Signal()  # a job finished: an earlier error no longer holds

    def __init__(self, state: AppState, bridge: EngineBridge, live_delay_ms: int, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.state, self.bridge = state, bridge
        self.batch: list[int] = []  # variations still to come, in order; the first is state.job
        self._tiles: QImage | None = None  # the picture a tiled job's tiles are painted into
        self._upscaling_job, self._upscaling = -1, ""  # the upscale job and what its status line says
        self.live = LiveScheduler(live_delay_ms, self)
        self.live.fire.connect(lambda: self.generate(latest_wins=True, live_frame=True))
        bridge.started.connect(self._on_started)
        bridge.progress.connect(lambda job, msg: job == state.job and self.status.emit(msg, 0))
        bridge.preview.connect(self._on_preview)
        bridge.finished.connect(self._on_finished)
        bridge.failed.connect(self._on_failed)
        bridge.cancelled.connect(self._on_cancelled)
        state.settings_changed.connect(self._on_settings_changed)
        state.doc.layer_settings_changed.connect(self._on_layer_settings_changed)

    # --- requests --------------------------------------------------------------------------
    def generate(self, latest_wins: bool = False, live_frame: bool = False) -> int | None:
        try:
            req = self.state.capture_request(live_frame)
            req.validate()
        except UserError as exc:
            self.error.emit(str(exc))
            return None
        self.state.set_job(self.bridge.submit(req, latest_wins=latest_wins or self.state.settings.live))
        self.state.editor_of[self.state.job] = self.state.capture_editor()
        self.running.emit(True)
        return self.state.job

    def generate_variations(self, count: int = 4) -> list[int]:
        """`count` pictures of the same request, seed, seed+1, …: each with its previews, all in the history."""
        from noisebrush.engine.edit import variations

        try:
            req = self.state.capture_request()
            req.validate()
            reqs = variations(req, count, req.seed if req.seed is not None else 0)
        except UserError as exc:
            self.error.emit(str(exc))
            return []
        editor = self.state.capture_editor()
        self.batch = [self.bridge.submit(r) for r in reqs]
        for job in self.batch:
            self.state.editor_of[job] = editor
        self.state.set_job(self.batch[0])
        self.running.emit(True)
        return list(self.batch)

    def cancel(self) -> None:
        """Stops the running job, and every variation still waiting."""
        self.live.stop()
        for job in self.batch:
            if job != self.state.job:
                self.bridge.cancel(job)
        self.batch = []
        if self.state.job is not None:
            self.bridge.cancel(self.state.job)

    # --- what starts a live frame ----------------------------------------------------------
    def edited(self) -> None:
        """A stroke (going on or ended), a joint drag or a loaded map: in live mode, a new frame soon."""
        if self.state.settings.live:
            self.live.poke()

    def _on_settings_changed(self, names: frozenset, origin: str) -> None:
        if origin != "user":
            return  # restores and the seed policy never start a frame
        if names - NOT_IN_REQUEST or ("live" in names and self.state.settings.live):
            self.edited()

    def _on_layer_settings_changed(self, _kind: str, names: frozenset, origin: str) -> None:
        if origin == "user" and names & LAYER_REQUEST_FIELDS:  # opacity and Show change only the view
            self.edited()

    # --- engine events (GUI thread) --------------------------------------------------------
    def _on_started(self, job: int) -> None:
        if job == self.state.job:
            self.status.emit(self._upscaling if job == self._upscaling_job else "Generating…", 0)

    def _on_preview(self, job: int, step: int, total: int, image: np.ndarray, elapsed: float, box: tuple | None) -> None:
        if job != self.state.job:
            return  # a superseded job's late frame
        if box is None:
            self._tiles = to_qimage(image)  # a tiled job's first frame is the upscaled picture its tiles land on
            self.state.set_result(self._tiles, preview=True)
        elif self._tiles is not None:  # a tile's step (blurry, at latent size) or its finished pixels, in place
            p = QPainter(self._tiles)
            p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
            p.drawImage(QRectF(*box), to_qimage(image))
            p.end()
            self.state.set_result(self._tiles, preview=True)
        self.progress.emit(step, total, elapsed / step * (total - step) if step else None)

    def upscale(self, scale: float, upscaler: str, strength: float, controlnet: str = "") -> int | None:
        """The picture (the Image layer's, else the shown result) upscaled and refined in tiles, previews in place."""
        try:
            req = self.state.capture_upscale(scale, upscaler, strength, controlnet)
            req.validate()
        except UserError as exc:
            self.error.emit(str(exc))
            return None
        self.state.set_job(self.bridge.submit(req, latest_wins=True))
        self.state.editor_of[self.state.job] = self.state.capture_editor()
        self.running.emit(True)
        self._upscaling_job = self.state.job
        what = f"refining in tiles at {strength:g}" if strength else "no refine"
        self._upscaling = f"Upscaling to {req.width}×{req.height} ({what})…"
        self.status.emit(self._upscaling, 0)
        return self.state.job

    def _on_finished(self, job: int, ev: Finished) -> None:
        self.state.add_result(ev, live=self.state.settings.live)
        if job != self.state.job:
            return
        self.state.last_result = ev
        self.state.set_result(to_qimage(ev.image))
        self._end()
        self.succeeded.emit()
        self.status.emit(f"Done in {ev.elapsed_s:.2f} s · seed {ev.params.seed} · {ev.params.width}×{ev.params.height}", 0)
        if self.state.settings.live:
            self.live.frame_done()

    def _on_failed(self, job: int, message: str) -> None:
        if job == self.state.job:
            self._end()
        elif job in self.batch:
            self.batch.remove(job)
        self.error.emit(message)

    def _on_cancelled(self, job: int, at_step: int) -> None:
        if job in self.batch and job != self.state.job:  # a queued variation, dropped
            self.batch.remove(job)
        if job == self.state.job:
            last = self.state.last_result  # not the noisy partial preview: the last good picture, if any
            self.state.set_result(to_qimage(last.image) if last is not None else None)
            self._end()
            self.status.emit(f"Cancelled after {at_step} step(s)", 0)

    def _end(self) -> None:
        """The current job is over: the next variation of a batch becomes current, or nothing runs."""
        if self.state.job in self.batch:
            self.batch.remove(self.state.job)
        if self.batch:
            self.state.set_job(self.batch[0])
            return
        self.state.set_job(None)
        self.running.emit(False)
