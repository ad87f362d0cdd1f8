"""The one place where engine events become Qt signals on the GUI thread.

Engine listeners run on the engine thread; emitting a signal of a QObject that
lives on the GUI thread queues the call there. Previews are coalesced: while one
is waiting to be shown, a newer one replaces it instead of queuing behind it, so
the canvas never falls behind the engine.
"""

from __future__ import annotations

import threading

import numpy as np
from PySide6.QtCore import QObject, Signal, Slot
from PySide6.QtGui import QImage

from noisebrush.engine.engine import Engine
from noisebrush.engine.events import Cancelled, Event, Failed, Finished, Preview, Progress, Started
from noisebrush.engine.request import GenerationRequest


def to_qimage(image: np.ndarray) -> QImage:
    """An RGB uint8 array → a QImage that owns its pixels (safe after the array is gone)."""
    arr = np.ascontiguousarray(image)
    h, w = arr.shape[:2]
    return QImage(arr.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()


class EngineBridge(QObject):
    started = Signal(int)
    progress = Signal(int, str)
    preview = Signal(int, int, int, object, float, object)  # job, step, total, np.ndarray, elapsed, tile box or None
    finished = Signal(int, object)  # job, engine.events.Finished
    failed = Signal(int, str)
    cancelled = Signal(int, int)
    _preview_ready = Signal()

    def __init__(self, engine: Engine, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.engine = engine
        self._lock = threading.Lock()
        # the latest preview not yet shown, per place: frames of one picture replace each other (a slow GUI skips
        # them), but a tiled job's tiles each keep their latest, so none is missing from the canvas
        self._pending_previews: dict[tuple | None, Preview] = {}
        self._preview_ready.connect(self._flush_preview)
        engine.add_listener(self._on_event)

    # engine thread
    def _on_event(self, ev: Event) -> None:
        if isinstance(ev, Preview):
            with self._lock:
                queued = bool(self._pending_previews)
                self._pending_previews[ev.box] = ev
            if not queued:
                self._preview_ready.emit()
        elif isinstance(ev, Started):
            self.started.emit(ev.job_id)
        elif isinstance(ev, Progress):
            self.progress.emit(ev.job_id, ev.message)
        elif isinstance(ev, Finished):
            self.finished.emit(ev.job_id, ev)
        elif isinstance(ev, Failed):
            self.failed.emit(ev.job_id, ev.message)
        elif isinstance(ev, Cancelled):
            self.cancelled.emit(ev.job_id, ev.at_step)

    # GUI thread
    @Slot()
    def _flush_preview(self) -> None:
        with self._lock:
            pending, self._pending_previews = list(self._pending_previews.values()), {}
        for ev in pending:
            self.preview.emit(ev.job_id, ev.step, ev.total, ev.image, ev.elapsed_s, ev.box)

    def switch_engine(self, engine: Engine) -> Engine:
        """Route a new engine's jobs through here; the old one's jobs are cancelled (their Cancelled events still
        arrive, and job ids never repeat across engines). Pass the old engine to `retire`, off the GUI thread."""
        old, self.engine = self.engine, engine
        engine.add_listener(self._on_event)
        old.cancel_all()
        return old

    def retire(self, old: Engine, timeout: float = 30.0) -> bool:
        done = old.shutdown(timeout)
        old.remove_listener(self._on_event)
        return done

    def submit(self, request: GenerationRequest, latest_wins: bool = False) -> int:
        return self.engine.submit(request, latest_wins=latest_wins)

    def cancel(self, job_id: int) -> None:
        self.engine.cancel(job_id)

    def shutdown(self, timeout: float = 30.0) -> bool:
        self.engine.remove_listener(self._on_event)
        return self.engine.shutdown(timeout)
