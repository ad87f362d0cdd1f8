"""Run slow non-engine work (preprocessors, downloads) off the GUI thread, results back as signals."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Signal

from noisebrush.engine.errors import UserError

log = logging.getLogger(__name__)


class Task(QObject):
    """One background call. `progress(done, total)` may be called from the work function."""

    done = Signal(object)
    failed = Signal(str)
    progressed = Signal(int, int)

    def __init__(self, fn: Callable[..., Any], *, with_progress: bool = False, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.cancelled = threading.Event()
        self._fn = fn
        self._with_progress = with_progress
        self._thread = threading.Thread(target=self._run, name="noisebrush-task", daemon=True)

    def start(self) -> Task:
        self._thread.start()
        return self

    def cancel(self) -> None:
        self.cancelled.set()

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        try:
            if self._with_progress:
                result = self._fn(lambda d, t: self.progressed.emit(int(d), int(t)), self.cancelled)
            else:
                result = self._fn()
        except UserError as exc:
            self.failed.emit(str(exc))
        except Exception as exc:  # a bug or a case no check foresaw: a sentence for the person, the traceback to the log
            log.exception("background task failed")
            first = str(exc).splitlines()[0][:200] if str(exc) else ""
            self.failed.emit(f"Something unexpected went wrong{': ' + first if first else ''} (the log has the details)")
        else:
            self.done.emit(result)
