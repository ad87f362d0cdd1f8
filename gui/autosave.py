"""Autosave of the sketch and settings, one folder and one lock per running instance, and crash recovery.

Each instance writes under <data>/sessions/<id>/, held by a QLockFile. A folder whose lock nobody holds (its
process died: QLockFile sees the PID is gone) is an orphan: its sketch is offered for restore. Every snapshot goes
into a new snap-N folder and is verified before the `latest` pointer moves to it, so a failed write (a full disk)
never touches the last good autosave.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
from PySide6.QtCore import QLockFile
from PySide6.QtGui import QImage

from noisebrush.engine.pose import Person
from noisebrush.gui.document import Document
from noisebrush.gui.references import replace_references
from noisebrush.gui.regions import replace_regions
from noisebrush.gui.state import AppState, GenerationSettings

LOCK_NAME = "session.lock"
POINTER = "latest"


def _locked(folder: Path) -> QLockFile:
    lock = QLockFile(str(folder / LOCK_NAME))
    lock.setStaleLockTime(0)  # staleness by PID only: a lock of a live instance is never broken by age
    return lock


class SessionFolder:
    """One session's autosave folder: its snapshots and the pointer to the newest good one."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def latest(self) -> Path | None:
        try:
            snap = self.path / (self.path / POINTER).read_text().strip()
        except OSError:
            return None
        return snap if (snap / "state.json").is_file() else None

    def modified(self) -> float:
        snap = self.latest()
        return (snap / "state.json").stat().st_mtime if snap else 0.0

    def write(self, snap: dict) -> None:
        """Write a snapshot into a new folder, verify it, then point `latest` at it (atomically). Raises OSError."""
        self.path.mkdir(parents=True, exist_ok=True)
        target = self.path / f"snap-{time.time_ns()}"
        target.mkdir()
        try:
            state = {
                "values": snap["values"],
                "size": snap["size"],
                "layers": {},
                "regions": snap.get("regions", []),
                "references": [info for info, _image, _mask in snap.get("references", [])],
            }
            for info, image, mask in snap.get("references", []):  # their pictures, beside the layers
                for name, pixels in ((f"{info['key']}.png", image), (f"{info['key']}-mask.png", mask)):
                    if pixels is not None:
                        write_png(target / name, pixels)
            for kind, info in snap["layers"].items():
                file = target / f"{kind}.png"
                # QImage.save says False on a full disk; read back, so a truncated file is caught too
                if not info["image"].save(str(file), "PNG") or QImage(str(file)).isNull():
                    raise OSError(f"could not write {file.name} (is the disk full?)")
                state["layers"][kind] = {k: v for k, v in info.items() if k != "image"}
            data = json.dumps(state)
            (target / "state.json").write_text(data)
            if (target / "state.json").read_text() != data:
                raise OSError("the autosave did not read back as written (is the disk full?)")
            pointer = self.path / f".{POINTER}.tmp"
            pointer.write_text(target.name)
            os.replace(pointer, self.path / POINTER)
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise
        for old in self.path.glob("snap-*"):  # only now: the previous good one stayed until this one was complete
            if old != target:
                shutil.rmtree(old, ignore_errors=True)

    def load(self, doc: Document) -> GenerationSettings | None:
        """Put the saved layers into `doc` (undoably, as a restore) and return the saved settings."""
        snap = self.latest()
        if snap is None:
            return None
        try:
            state = json.loads((snap / "state.json").read_text())
        except (OSError, json.JSONDecodeError):
            return None
        saved_refs = [r for r in state.get("references") or [] if isinstance(r, dict) and isinstance(r.get("key"), str)]
        replace_references(doc, [(r, read_png(snap / f"{r['key']}.png"), read_png(snap / f"{r['key']}-mask.png", mask=True))
                                 for r in saved_refs if (snap / f"{r['key']}.png").is_file()], "Restore autosave")  # fmt: skip
        saved_regions = [r for r in state.get("regions") or [] if isinstance(r, dict) and isinstance(r.get("key"), str)]
        files = {now: r["key"] for now, r in zip(replace_regions(doc, saved_regions, "Restore autosave"), saved_regions)}
        for kind in doc.all_layers():
            img = QImage(str(snap / f"{files.get(kind, kind)}.png"))  # a region's pixels under the key it had then
            info = state["layers"].get(files.get(kind, kind), {})
            people = [Person([None if q is None else tuple(q) for q in p["keypoints"]], frozenset(p.get("hidden", [])))
                      for p in info.get("people", [])]  # fmt: skip
            if not img.isNull():
                doc.set_layer_image(kind, img, "Restore autosave", people)
            doc.restore_layer_settings(kind, info.get("settings"))
        return GenerationSettings.from_dict(state.get("values", {}))


def write_png(path: Path, pixels: np.ndarray) -> None:
    """A picture (RGB or HxW) as a PNG, read back so a full disk is caught. Raises OSError."""
    from PIL import Image

    Image.fromarray(pixels).save(path, "PNG")
    with Image.open(path) as check:
        check.load()


def read_png(path: Path, mask: bool = False) -> np.ndarray | None:
    """A picture autosave wrote (None if it is missing or unreadable: the rest still comes back)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("L" if mask else "RGB"))
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


class Autosave:
    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir) / "sessions"
        self.session = SessionFolder(self.root / f"{os.getpid()}-{time.time_ns()}")
        self.dir = self.session.path
        self._lock: QLockFile | None = None
        self._claimed: dict[Path, QLockFile] = {}  # orphans this instance holds while it offers them

    @property
    def lock(self) -> Path:
        return self.dir / LOCK_NAME

    def start_session(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = _locked(self.dir)
        if not self._lock.tryLock(0):
            raise OSError(f"cannot lock the autosave folder {self.dir}")

    def orphans(self) -> list[SessionFolder]:
        """Sessions that did not end cleanly and left a sketch, newest first. Claims each (takes its stale lock),
        so that two instances never offer, or restore, the same one."""
        found = []
        for path in self.root.glob("*") if self.root.is_dir() else ():
            folder = SessionFolder(path)
            if path == self.dir or not path.is_dir() or folder.latest() is None:
                continue
            lock = self._claimed.get(path) or _locked(path)
            if path in self._claimed or lock.tryLock(0):  # its owner is gone
                self._claimed[path] = lock
                found.append(folder)
        return sorted(found, key=SessionFolder.modified, reverse=True)

    def discard(self, folder: SessionFolder) -> None:
        """An orphan that was restored (its sketch now lives in this session) or that the person dropped."""
        lock = self._claimed.pop(folder.path, None)
        if lock is not None:
            lock.unlock()
        shutil.rmtree(folder.path, ignore_errors=True)

    def end_session(self) -> None:
        """A clean exit: this session's folder goes, with its lock; orphans not taken up stay for the next start."""
        for lock in self._claimed.values():
            lock.unlock()
        self._claimed.clear()
        if self._lock is not None:
            self._lock.unlock()
        shutil.rmtree(self.dir, ignore_errors=True)

    @staticmethod
    def snapshot(state: AppState) -> dict:
        """What to save, captured on the GUI thread without copying pixels (QImage shares them until written to)."""
        doc = state.doc
        layers = {}
        for kind, layer in doc.all_layers().items():
            layers[kind] = {
                "image": QImage(layer.image),  # shared, not copied: a stroke detaches the layer's own
                "settings": dataclasses.asdict(layer.settings),
                "people": [{"keypoints": p.keypoints, "hidden": sorted(p.hidden)} for p in layer.people],
            }
        return {"values": dataclasses.asdict(state.settings), "layers": layers, "size": [doc.size.width(), doc.size.height()],
                "regions": [r.describe() for r in doc.regions.values()],
                "references": [(r.describe(), r.image, r.saved_mask) for r in doc.references]}  # fmt: skip

    def write(self, snap: dict) -> None:
        self.session.write(snap)

    def save(self, state: AppState) -> None:
        self.write(self.snapshot(state))
