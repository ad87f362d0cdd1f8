"""What outlives the window: QSettings (settings, geometry, options) and the autosave of the sketch with its
crash-recovery offer. Autosave writes go through the one worker idiom (gui/tasks.py), off the GUI thread."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from PySide6.QtCore import QObject, QSettings, QTimer, Signal

from noisebrush.engine.models import model_defaults
from noisebrush.gui.autosave import Autosave, SessionFolder
from noisebrush.gui.state import AppState, GenerationSettings
from noisebrush.gui.tasks import Task

AUTOSAVE_MS = 4000
AUTOSAVE_AFTER_STROKE_MS = 800  # once the hand has paused


def usable_model(ref: str) -> bool:
    """A folder, a .safetensors file or a cached Hub id that still resolves (all kinds survive a restart)."""
    from noisebrush.engine.errors import UserError
    from noisebrush.engine.models import resolve_model_dir

    try:
        resolve_model_dir(ref)
    except (UserError, OSError):
        return False
    return True


def initial_settings(settings: QSettings, default_model: str) -> GenerationSettings:
    """The model's defaults, then what the last session kept. Live mode is opt-in per session."""
    d = model_defaults(default_model)
    values = GenerationSettings(model=default_model, width=d.width, height=d.height, steps=d.steps, guidance=d.guidance,
                                scheduler=d.scheduler)  # fmt: skip
    raw = settings.value("panel")
    if isinstance(raw, str):
        try:
            saved = json.loads(raw)
            known = GenerationSettings.__dataclass_fields__
            values = dataclasses.replace(values, **{k: v for k, v in saved.items() if k in known})
        except (json.JSONDecodeError, TypeError, AttributeError):
            pass
    if values.model and not usable_model(values.model):
        values = dataclasses.replace(values, model=default_model)
    return dataclasses.replace(values, live=False, mode="generate")  # the Image layer starts empty: nothing to edit yet


class Persistence(QObject):
    status = Signal(str, int)

    def __init__(self, state: AppState, settings: QSettings, data_dir: Path, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.state, self.settings = state, settings
        self.autosave = Autosave(Path(data_dir))
        self._dirty = False
        self._writer: Task | None = None
        self.timer = QTimer(self)
        self.timer.setInterval(AUTOSAVE_MS)
        self.timer.timeout.connect(self.autosave_if_dirty)
        self.timer.start()
        self.soon = QTimer(self)
        self.soon.setSingleShot(True)
        self.soon.setInterval(AUTOSAVE_AFTER_STROKE_MS)
        self.soon.timeout.connect(self.autosave_if_dirty)
        state.settings_changed.connect(lambda *_: self.mark_dirty())
        state.doc.layer_settings_changed.connect(lambda *_: self.mark_dirty())
        state.doc.undo_stack.indexChanged.connect(lambda _i: self.mark_dirty())

    def mark_dirty(self, soon: bool = False) -> None:
        self._dirty = True
        if soon:
            self.soon.start()

    # --- autosave --------------------------------------------------------------------------
    def autosave_if_dirty(self) -> None:
        """Snapshot on the GUI thread, encode and write the PNGs on a worker (keeps strokes smooth)."""
        if not self._dirty:
            return
        if self._writer is not None and not self._writer.join(0):
            self.soon.start()  # one write at a time; try again shortly
            return
        self._dirty = False
        snap = self.autosave.snapshot(self.state)
        self._writer = Task(lambda: self.autosave.write(snap), parent=self)
        self._writer.failed.connect(self._write_failed)
        self._writer.start()

    def _write_failed(self, message: str) -> None:
        self._dirty = True  # try again at the next tick; the last good autosave is untouched
        print(f"noisebrush: autosave failed: {message}", file=sys.stderr)
        self.status.emit(f"Autosave failed: {message}. The last good one is kept.", 10000)

    def autosave_now(self) -> None:
        """Write the sketch synchronously (on quit, and for tests)."""
        if self._writer is not None:
            self._writer.join()
        self._dirty = False
        try:
            self.autosave.save(self.state)
        except OSError as exc:
            self.status.emit(f"Autosave failed: {exc}", 8000)

    def start_session(self) -> list[SessionFolder]:
        """Lock this instance's own autosave folder; returns the sketches of sessions that did not end cleanly."""
        self.autosave.start_session()
        return self.autosave.orphans()

    def restore_autosave(self, folder: SessionFolder | None = None) -> bool:
        """The newest orphaned sketch (or `folder`) into this session; that orphan is then discarded."""
        if folder is None:
            orphans = self.autosave.orphans()
            if not orphans:
                return False
            folder = orphans[0]
        values = folder.load(self.state.doc)
        if values is None:
            return False
        self.state.update("restore", **{k: v for k, v in dataclasses.asdict(values).items() if k != "live"})
        self.autosave.discard(folder)
        self.mark_dirty(soon=True)  # it lives in this session's autosave from now on
        self.status.emit("Sketch restored from autosave", 6000)
        return True

    # --- settings --------------------------------------------------------------------------
    def save_settings(self, geometry: bytes) -> None:
        self.settings.setValue("panel", json.dumps(dataclasses.asdict(self.state.settings)))
        self.settings.setValue("geometry", geometry)
        self.settings.sync()

    def close(self) -> None:
        """Stop the timers, write the sketch and end the session cleanly (no crash marker is left)."""
        self.timer.stop()
        self.soon.stop()
        self.autosave_now()
        self.autosave.end_session()
