"""Autosave of the sketch and settings, and crash detection by a session lock file."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from PySide6.QtGui import QImage

from noisebrush.engine.pose import Person
from noisebrush.gui.document import Document, LayerSettings
from noisebrush.gui.state import AppState, GenerationSettings


class Autosave:
    def __init__(self, data_dir: Path) -> None:
        self.dir = Path(data_dir) / "autosave"
        self.lock = Path(data_dir) / "session.lock"

    def has_crash_recovery(self) -> bool:
        """The last session did not end cleanly and left a sketch behind."""
        return self.lock.exists() and (self.dir / "state.json").exists()

    def start_session(self) -> None:
        self.lock.parent.mkdir(parents=True, exist_ok=True)
        self.lock.write_text(str(os.getpid()))

    def end_session(self) -> None:
        self.lock.unlink(missing_ok=True)

    @staticmethod
    def snapshot(state: AppState) -> dict:
        """What to save, captured on the GUI thread (QImage copies share pixels until written to)."""
        doc = state.doc
        layers = {}
        for kind, layer in doc.layers.items():
            layers[kind] = {
                "image": layer.image.copy(),
                "settings": dataclasses.asdict(layer.settings),
                "people": [{"keypoints": p.keypoints, "hidden": sorted(p.hidden)} for p in layer.people],
            }
        return {"values": dataclasses.asdict(state.settings), "layers": layers, "size": [doc.size.width(), doc.size.height()]}

    def write(self, snap: dict) -> None:
        """Write a snapshot; safe off the GUI thread (QImage, not QPixmap)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        state = {"values": snap["values"], "size": snap["size"], "layers": {}}
        for kind, info in snap["layers"].items():
            tmp = self.dir / f".{kind}.png"
            info["image"].save(str(tmp), "PNG")
            tmp.replace(self.dir / f"{kind}.png")
            state["layers"][kind] = {k: v for k, v in info.items() if k != "image"}
        tmp = self.dir / ".state.json"
        tmp.write_text(json.dumps(state))
        tmp.replace(self.dir / "state.json")  # written last: a state.json always has its layer files

    def save(self, state: AppState) -> None:
        self.write(self.snapshot(state))

    def load(self, doc: Document) -> GenerationSettings | None:
        """Put the saved layers into `doc` (undoably, as a restore) and return the saved settings."""
        try:
            state = json.loads((self.dir / "state.json").read_text())
        except (OSError, json.JSONDecodeError):
            return None
        for kind in doc.layers:
            img = QImage(str(self.dir / f"{kind}.png"))
            info = state["layers"].get(kind, {})
            people = [Person([None if q is None else tuple(q) for q in p["keypoints"]], frozenset(p.get("hidden", [])))
                      for p in info.get("people", [])]  # fmt: skip
            if not img.isNull():
                doc.set_layer_image(kind, img, "Restore autosave", people)
            known = LayerSettings.__dataclass_fields__
            doc.set_layer_settings(kind, "restore", **{k: v for k, v in info.get("settings", {}).items() if k in known})
        return GenerationSettings.from_dict(state.get("values", {}))
