"""History kept on disk: each kept result as a Noisebrush PNG in a capped folder, read back at the next start.

Live frames do not fill it: they take one live slot in the strip, and the last one is kept when live mode stops.
Writes and the start-up read go through the worker idiom (gui/tasks.py).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from PySide6.QtCore import QObject

from noisebrush.engine.events import Finished
from noisebrush.gui.state import HISTORY_LIMIT, AppState
from noisebrush.gui.tasks import Task


def _write(folder: Path, ev: Finished, editor: dict | None) -> Path:
    from noisebrush.engine.metadata import save_png

    folder.mkdir(parents=True, exist_ok=True)
    path = save_png(ev.image, ev.params, folder / f"{time.time_ns()}-{ev.params.seed}.png", ev.model_name, editor)
    for old in sorted(folder.glob("*.png"))[:-HISTORY_LIMIT]:  # the oldest beyond the cap
        old.unlink(missing_ok=True)
    return path


def _read(folder: Path, limit: int) -> list[tuple[Finished, dict]]:
    """Newest first; a file that fails to read is skipped (one bad file loses nothing else)."""
    from noisebrush.engine.errors import UserError
    from noisebrush.engine.images import read_image
    from noisebrush.engine.metadata import read_saved

    found = []
    for i, path in enumerate(sorted(folder.glob("*.png"), reverse=True)[:limit]):
        try:
            req, editor = read_saved(path)
            image = read_image(path).image
        except UserError:
            continue
        found.append((Finished(-1 - i, image, req, 0.0, req.model or "noisebrush-default"), editor))
    return found


class HistoryStore(QObject):
    def __init__(self, state: AppState, folder: Path, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.state, self.folder = state, Path(folder)
        self._tasks: list[Task] = []
        state.result_kept.connect(self.keep)

    def keep(self, ev: Finished) -> Task:
        editor = self.state.editor_of.get(ev.job_id)
        task = Task(lambda: _write(self.folder, ev, editor), parent=self)
        task.failed.connect(lambda msg: print(f"noisebrush: history not saved: {msg}", file=sys.stderr))
        return self._start(task)

    def load(self) -> Task:
        """The last session's results into the strip, oldest first so the newest ends up in front."""
        task = Task(lambda: _read(self.folder, HISTORY_LIMIT), parent=self)
        task.done.connect(self._loaded)
        return self._start(task)

    def _loaded(self, entries: list[tuple[Finished, dict]]) -> None:
        for ev, editor in reversed(entries):
            self.state.editor_of[ev.job_id] = editor
            self.state.add_result(ev, kept=False)  # already on disk

    def _start(self, task: Task) -> Task:
        self._tasks = [t for t in self._tasks if not t.join(0)] + [task]
        return task.start()

    def close(self) -> None:
        for task in self._tasks:
            task.join(10)
