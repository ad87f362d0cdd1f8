"""OpenRaster projects: save every layer and setting; open ours, Krita's, GIMP's (layers by name, the rest into
the Image layer, and a banner that says what went where)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, QSettings, Signal
from PySide6.QtWidgets import QFileDialog, QWidget

from noisebrush.engine.controls import paint_order
from noisebrush.engine.errors import UserError
from noisebrush.engine.metadata import from_b64, png_b64
from noisebrush.gui.document import qimage_to_rgba
from noisebrush.gui.engine_bridge import to_qimage
from noisebrush.gui.files import about
from noisebrush.gui.references import replace_references
from noisebrush.gui.regions import replace_regions
from noisebrush.gui.state import AppState
from noisebrush.gui.tasks import Task


def _names(names: list[str], most: int = 3) -> str:
    """'the layers "A", "B" and 2 more' for a message."""
    quoted = [f'"{n}"' for n in names[:most]] + ([f"{len(names) - most} more"] if len(names) > most else [])
    listed = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]
    return ("the layer " if len(names) == 1 else "the layers ") + listed


def letterboxed(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """A picture fitted inside width×height (aspect kept, centred, transparent around): a layer other apps keep."""
    from PIL import Image

    h, w = image.shape[:2]
    scale = min(1.0, width / w, height / h)
    fit = (max(1, round(w * scale)), max(1, round(h * scale)))
    pic = np.asarray(Image.fromarray(image).resize(fit, Image.Resampling.LANCZOS)) if fit != (w, h) else image
    out = np.zeros((height, width, 4), np.uint8)
    y, x = (height - fit[1]) // 2, (width - fit[0]) // 2
    out[y : y + fit[1], x : x + fit[0], :3] = pic
    out[y : y + fit[1], x : x + fit[0], 3] = 255
    return out


def unboxed(rgba: np.ndarray) -> np.ndarray:
    """The picture letterboxed() placed: the opaque part of the layer (all of it when nothing is transparent)."""
    ys, xs = np.nonzero(rgba[..., 3] > 0)
    if len(ys) == 0:
        return rgba[..., :3]
    return np.ascontiguousarray(rgba[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1, :3])


class Projects(QObject):
    """Layered projects as OpenRaster (.ora): every layer, the settings and the skeleton, for Krita and back."""

    status = Signal(str, int)
    error = Signal(str)
    notice = Signal(str)  # what the person should know about an opened file (not an error)
    opened = Signal()

    def __init__(self, state: AppState, settings: QSettings, window: QWidget) -> None:
        super().__init__(window)
        self.state, self.settings, self.window = state, settings, window
        self._read: Task | None = None

    def save_dialog(self) -> None:
        folder = Path(str(self.settings.value("save_dir") or Path.home()))
        path, _ = QFileDialog.getSaveFileName(self.window, "Save project", str(folder / "project.ora"), "OpenRaster (*.ora)")
        if path:
            self.save(path)

    def save(self, path: str) -> bool:
        from noisebrush.engine.ora import OraLayer, Project, write_ora

        if not path.lower().endswith(".ora"):
            path += ".ora"
        doc, state = self.state.doc, self.state
        w, h = doc.size.width(), doc.size.height()
        layers, kinds = [], {}

        def add(name: str, kind: str, rgba: np.ndarray, visible: bool, opacity: float) -> None:
            layers.append(OraLayer(name, rgba, visible, opacity))
            kinds[name] = kind

        image = doc.edit_layers["image"]
        add("Image", "image", qimage_to_rgba(image.image), image.settings.visible, 1.0)
        if state.last_result is not None:
            import cv2

            rgb = cv2.resize(state.last_result.image, (w, h), interpolation=cv2.INTER_LINEAR)
            add("Result", "result", np.dstack([rgb, np.full((h, w), 255, np.uint8)]), True, 1.0)
        for kind in paint_order():
            layer = doc.layers[kind]
            add(layer.info.title, kind, qimage_to_rgba(layer.display_image()), layer.settings.visible, layer.settings.opacity)
        for i, region in enumerate(doc.regions.values()):  # named by their prompts, so Krita shows what each is
            add(f"Region {i + 1}: {region.prompt}", region.kind, qimage_to_rgba(region.display_image()),
                region.settings.visible, region.settings.opacity)  # fmt: skip
        mask = doc.edit_layers["mask"]
        add("Mask", "mask", qimage_to_rgba(mask.image), mask.settings.visible, mask.settings.opacity)
        refs = []
        for i, ref in enumerate(doc.references):  # hidden layers, so Krita keeps the pictures on a round trip
            name = f"Reference {i + 1} (keep hidden)"
            add(name, ref.key, letterboxed(ref.image, w, h), False, 1.0)
            refs.append({**ref.describe(), "layer": name,
                         "mask": None if ref.saved_mask is None else png_b64(ref.saved_mask)})  # fmt: skip
        data = {
            "references": refs,
            "regions": [r.describe() for r in doc.regions.values()],
            "settings": dataclasses.asdict(state.settings),
            "layers": {k: dataclasses.asdict(layer.settings) for k, layer in doc.all_layers().items()},
            "kinds": kinds,
            **state.capture_editor(),
        }
        try:
            write_ora(path, Project(w, h, layers, data))
        except (OSError, UserError) as exc:
            self.error.emit(f"Could not save {path}: {exc}")
            return False
        self.status.emit(f"Saved project {path}", 6000)
        return True

    def _put_layer(self, kind: str, rgba: np.ndarray, data: dict) -> None:
        from noisebrush.gui.document import rgb_to_qimage_argb

        doc = self.state.doc
        people = self.state.skeleton_from(data) if doc.layer(kind).info.editor == "pose" else None
        rgba = rgba if people is None else np.zeros_like(rgba)  # the skeleton draws itself
        doc.set_layer_image(kind, rgb_to_qimage_argb(np.ascontiguousarray(rgba[..., :3]), rgba[..., 3]), "Open project",
                            people)  # fmt: skip

    def _layer_settings(self, kind: str, layer, saved_layers: dict) -> None:
        """Noisebrush's own settings for the layer where the file kept them; else what any app keeps (shown or
        hidden, opacity), so a depth layer hidden in Krita opens hidden."""
        doc = self.state.doc
        if isinstance(saved_layers.get(kind), dict):
            doc.restore_layer_settings(kind, saved_layers[kind])
        elif layer is not None:
            doc.set_layer_settings(kind, "restore", visible=layer.visible, opacity=round(layer.opacity, 3))

    def _open_regions(self, project, data: dict, kinds: dict, saved_layers: dict) -> None:
        """The file's regions as region layers (keys are new: `kinds` and `saved_layers` are re-keyed to them).
        Without Noisebrush's data, layers named "Region N: prompt" (as Noisebrush names them) still are regions."""
        saved = [r for r in data.get("regions") or [] if isinstance(r, dict) and isinstance(r.get("key"), str)]
        if not saved:
            named = [layer.name for layer in project.layers if layer.name.startswith("Region") and ": " in layer.name]
            saved = [{"key": name, "prompt": name.split(": ", 1)[1]} for name in named]
            kinds.update({name: name for name in named})
        keys = replace_regions(self.state.doc, saved, "Open project")
        renamed = {r["key"]: new for r, new in zip(saved, keys)}
        for name, kind in list(kinds.items()):
            if kind in renamed:
                kinds[name] = renamed[kind]
        moved = {new: saved_layers.pop(old) for old, new in renamed.items() if old in saved_layers}
        saved_layers.update(moved)

    def _open_references(self, project, data: dict, kinds: dict) -> None:
        """The file's references from their hidden layers (the picture cropped out of its letterbox)."""
        by_name = {layer.name: layer for layer in project.layers}
        saved = []
        for info in data.get("references") or []:
            layer = by_name.get(info.get("layer")) if isinstance(info, dict) else None
            if layer is None:
                continue
            kinds[layer.name] = "reference"  # not a picture for the Image layer
            try:
                mask = from_b64(info["mask"]) if info.get("mask") else None
            except (ValueError, OSError):
                mask = None  # a damaged mask: the reference applies everywhere rather than not at all
            saved.append((info, unboxed(layer.rgba), None if mask is None else mask.max(axis=2)))
        replace_references(self.state.doc, saved, "Open project")

    def open_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self.window, "Open project", "", "OpenRaster (*.ora)")
        if path:
            self.open(path)

    def open(self, path: str) -> Task:
        """Read on a worker, then put every layer and setting into the state as one undo step."""
        from noisebrush.engine.ora import read_ora

        task = self._read = Task(lambda: read_ora(path), parent=self)
        task.done.connect(lambda project: self._apply(path, project))
        task.failed.connect(lambda msg: self.error.emit(about(path, msg)))
        task.done.connect(lambda _p: self.opened.emit())
        task.failed.connect(lambda _m: self.opened.emit())
        return task.start()

    def _apply(self, path: str, project) -> None:
        from noisebrush.gui.state import GenerationSettings

        state, doc = self.state, self.state.doc
        data = project.data
        saved = GenerationSettings.from_dict(data.get("settings", {})) if isinstance(data.get("settings"), dict) else None
        if saved is not None:
            model = saved.model if state.known_model(saved.model, "base") else state.settings.model
            state.update("restore", **(dataclasses.asdict(saved) | {"model": model, "live": False}))
        else:  # another app's file: the document takes its size and shape (its layers are not stretched)
            state.update("restore", width=project.width, height=project.height)
        titles = {layer.info.title: k for k, layer in doc.all_layers().items()}  # files edited in Krita keep names
        kinds = dict(data.get("kinds")) if isinstance(data.get("kinds"), dict) else {}
        saved_layers = dict(data.get("layers")) if isinstance(data.get("layers"), dict) else {}
        doc.undo_stack.beginMacro("Open project")
        try:
            self._open_regions(project, data, kinds, saved_layers)
            self._open_references(project, data, kinds)

            def kind_of(layer) -> str:
                return kinds.get(layer.name) or titles.get(layer.name) or layer.name.lower()

            # Layers Noisebrush has no kind for (Krita's "Background", "Paint Layer 1") are the picture: with the
            # Image layer they become the Image layer, blended as the file shows them; never dropped in silence.
            pictures = [layer for layer in project.layers if kind_of(layer) == "image"
                        or kind_of(layer) not in doc.all_layers() and kind_of(layer) not in ("result", "reference")]  # fmt: skip
            strangers = [layer.name for layer in pictures if kind_of(layer) != "image"]
            for layer in project.layers:
                kind = kind_of(layer)
                if kind == "result":
                    state.set_result(to_qimage(np.ascontiguousarray(layer.rgba[..., :3])))
                    continue
                if kind == "reference":
                    continue
                if any(layer is p for p in pictures):
                    continue
                self._put_layer(kind, layer.rgba, data)
                self._layer_settings(kind, layer, saved_layers)
            for kind in doc.all_layers():  # a layer another app left out (an empty one) keeps its settings too
                if kind not in {kind_of(layer) for layer in project.layers} and isinstance(saved_layers.get(kind), dict):
                    doc.restore_layer_settings(kind, saved_layers[kind])
            if pictures:
                from noisebrush.engine.ora import composite

                rgba = pictures[0].rgba if len(pictures) == 1 else composite(pictures, project.width, project.height)
                self._put_layer("image", rgba, data)
                self._layer_settings("image", pictures[-1] if len(pictures) == 1 else None, saved_layers)
        finally:
            doc.undo_stack.endMacro()
        notes = []
        if strangers:
            hidden = [layer.name for layer in pictures if not layer.visible]
            notes.append(f"{_names(strangers)} became the Image layer" + (f" ({_names(hidden)} hidden, so left out of it)"
                                                                          if hidden else ""))  # fmt: skip
        if not data:
            notes.append("it carries no Noisebrush settings (saved by another app?), so the prompt, model and "
                         "sliders stay as they were")  # fmt: skip
        if notes:
            self.notice.emit(f"Opened {Path(path).name}: " + "; ".join(notes) + ".")
        self.status.emit(f"Opened project {Path(path).name}", 6000)
