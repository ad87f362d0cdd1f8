"""Files in and out: open (a PNG's settings, a map into a layer, pose JSON), save, export, and picking models.

Everything restored from a file goes into the state model as a restore: nothing generates by accident.
A bad file shows one clear line and changes nothing.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, QSettings, Signal
from PySide6.QtWidgets import QFileDialog, QWidget

from noisebrush.engine.catalog import models_dir
from noisebrush.engine.controls import guess_kind, paint_order
from noisebrush.engine.errors import UserError
from noisebrush.engine.images import LoadedImage, fit_to, read_image
from noisebrush.engine.metadata import NoSettings, read_saved, save_png
from noisebrush.engine.models import model_defaults
from noisebrush.engine.pose import load_pose_json, people_to_json
from noisebrush.gui.document import qimage_to_rgba
from noisebrush.gui.engine_bridge import EngineBridge, to_qimage
from noisebrush.gui.state import AppState
from noisebrush.gui.tasks import Task

IMAGE_FILTER = "Images (*.png *.jpg *.jpeg *.webp *.bmp *.tif *.tiff)"
POSE_FILTER = "Pose maps or OpenPose JSON (*.png *.jpg *.jpeg *.webp *.bmp *.json)"


def about(path: str, message: str) -> str:
    """A failure to open `path` as one sentence that names the file (readers that know it already name it)."""
    name = Path(path).name
    return message if name in message else f"{name}: {message}"


def _names(names: list[str], most: int = 3) -> str:
    """'the layers "A", "B" and 2 more' for a message."""
    quoted = [f'"{n}"' for n in names[:most]] + ([f"{len(names) - most} more"] if len(names) > most else [])
    listed = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]
    return ("the layer " if len(names) == 1 else "the layers ") + listed


def free_name(folder: Path, seed: int | None) -> Path:
    """noisebrush-<seed>.png, or -2, -3… where that exists (a locked seed gives the same seed every time)."""
    stem = f"noisebrush-{seed}"
    path, n = folder / f"{stem}.png", 2
    while path.exists():
        path, n = folder / f"{stem}-{n}.png", n + 1
    return path


class Files(QObject):
    status = Signal(str, int)
    error = Signal(str)
    edited = Signal(str)  # a layer got new content from a file: in live mode that is a stroke
    models_scanned = Signal()
    files_read = Signal()  # a file read on a worker was applied (or refused)

    def __init__(self, state: AppState, bridge: EngineBridge, settings: QSettings, window: QWidget) -> None:
        super().__init__(window)
        self.state, self.bridge, self.settings, self.window = state, bridge, settings, window
        self._scan: Task | None = None
        self._reads: list[Task] = []

    # --- control maps ----------------------------------------------------------------------
    def load_layer_dialog(self, kind: str) -> None:
        info = self.state.doc.layer(kind).info
        filters = POSE_FILTER if info.accepts_pose_json else IMAGE_FILTER
        path, _ = QFileDialog.getOpenFileName(self.window, f"Load {info.title.lower()} map", "", filters)
        if path:
            self.load_layer_file(kind, path)

    def load_layer_file(self, kind: str, path: str, loaded: LoadedImage | None = None) -> bool:
        """Load a map or picture into a layer (undoable), read here unless `loaded` already holds it. A bad file
        shows a message and changes nothing."""
        doc = self.state.doc
        w, h = doc.size.width(), doc.size.height()
        try:
            if doc.layer(kind).info.accepts_pose_json and path.lower().endswith(".json"):
                notes: list[str] = []
                try:
                    people = load_pose_json(path, w, h, notes)
                except (ValueError, OSError) as exc:
                    raise UserError(str(exc)) from None
                doc.set_layer_from_map(kind, np.zeros((h, w, 3), np.uint8), people, "Load pose")
                if notes:
                    self.status.emit("; ".join(notes), 8000)
            else:
                loaded = loaded or read_image(path)
                image = fit_to(loaded.image, w, h, Path(path).name, loaded.notes)
                doc.set_layer_from_map(kind, image, None, f"Load {kind}")
                if loaded.notes:
                    self.status.emit("; ".join(loaded.notes), 8000)
        except UserError as exc:
            self.error.emit(about(path, str(exc)))
            return False
        self.edited.emit(kind)
        return True

    def use_map(self, kind: str, image: np.ndarray, people) -> None:
        """A map made from a photo (the preprocess dialog)."""
        self.state.doc.set_layer_from_map(kind, image, people, f"Make {kind} map")
        self.edited.emit(kind)

    def export_pose_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self.window, "Export pose", "pose.json", "OpenPose JSON (*.json)")
        if path:
            self.export_pose(path)

    def export_pose(self, path: str) -> None:
        doc = self.state.doc
        data = people_to_json(doc.pose_layer().people, doc.size.width(), doc.size.height())
        try:
            Path(path).write_text(json.dumps(data, indent=1))
        except OSError as exc:
            self.error.emit(f"Could not write {path}: {exc}")

    # --- open and save ---------------------------------------------------------------------
    def open_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self.window, "Open", "", "Images and pose JSON (*.png *.jpg *.jpeg *.webp *.json)")
        if path:
            self.open_files([path])

    def open_files(self, paths: list[str]) -> None:
        """Dropped or opened files: a Noisebrush/A1111 PNG restores settings; pose JSON becomes the pose layer; any
        other picture goes to the layer it looks like (lines, depth or pose), and the status line says which."""
        pose_kind = self.state.doc.pose_layer().kind
        for path in paths:
            if path.lower().endswith(".json"):
                self.load_layer_file(pose_kind, path)
            else:
                self.open_picture(path)

    def _put_picture(self, path: str, loaded: LoadedImage) -> bool:
        """A picture without settings into the layer it looks like, and say which."""
        kind, why = guess_kind(loaded.image)
        if kind not in self.state.doc.layers or not self.load_layer_file(kind, path, loaded):
            return False
        title = self.state.doc.layers[kind].info.title
        self.status.emit(f"{Path(path).name} went to the {title} layer: it looks like {why}. "
                         "Undo (Ctrl+Z) and use a layer's Load… to choose another.", 12000)  # fmt: skip
        return True

    def open_picture(self, path: str) -> Task:
        """Read a picture on a worker (a hostile file must not freeze the window). One that carries settings (a
        Noisebrush or A1111 PNG) restores them all or nothing; any other goes to the layer it looks like."""

        def read():
            loaded = read_image(path)
            try:
                return loaded, *read_saved(path)
            except NoSettings:
                return loaded, None, None

        task = Task(read, parent=self)
        task.done.connect(lambda got: self._restore(path, got))
        task.failed.connect(lambda msg: self.error.emit(about(path, msg)))
        self._reads.append(task)
        task.done.connect(lambda _got: self.files_read.emit())
        task.failed.connect(lambda _msg: self.files_read.emit())
        return task.start()

    def _restore(self, path: str, got) -> None:
        loaded, req, editor = got
        if req is None:
            self._put_picture(path, loaded)
            return
        notes = self.state.restore_saved(req, editor)
        self.state.last_result = None  # a picture from a file is shown, but Save writes only what was made here
        self.state.set_result(to_qimage(loaded.image))
        self.status.emit("; ".join([f"Settings restored from {Path(path).name}", *notes]), 12000 if notes else 6000)

    def save_dialog(self) -> None:
        ev = self.state.last_result
        if ev is None:
            self.error.emit("Nothing to save yet: generate an image first.")
            return
        folder = Path(str(self.settings.value("save_dir") or Path.home()))
        path, _ = QFileDialog.getSaveFileName(self.window, "Save image", str(free_name(folder, ev.params.seed)), "PNG (*.png)")
        if path and self.save_result(path):
            self.settings.setValue("save_dir", str(Path(path).parent))  # the next save opens here

    def save_result(self, path: str) -> bool:
        ev = self.state.last_result
        if ev is None:
            return False
        if not path.lower().endswith(".png"):
            path += ".png"
        try:
            save_png(ev.image, ev.params, path, ev.model_name, self.state.editor_of.get(ev.job_id))
        except (OSError, UserError) as exc:
            self.error.emit(f"Could not save {path}: {exc}")
            return False
        self.status.emit(f"Saved {path}", 6000)
        return True

    # --- models ----------------------------------------------------------------------------
    def browse_model(self, what: str = "file") -> None:
        """A checkpoint file (.safetensors, .gguf) or, with what="folder", a diffusers folder."""
        if what == "folder":
            ref = QFileDialog.getExistingDirectory(self.window, "Choose a diffusers model folder")
        else:
            ref, _ = QFileDialog.getOpenFileName(self.window, "Choose a model checkpoint", str(models_dir()),
                                                 "Checkpoints (*.safetensors *.gguf)")  # fmt: skip
        if not ref:
            return
        from noisebrush.engine.models import resolve_model_dir

        try:
            resolve_model_dir(ref)
        except UserError as exc:
            self.error.emit(str(exc))
            return
        self.use_model(ref)

    def download_model_dialog(self, fetch=None) -> None:
        from noisebrush.gui.download_dialog import DownloadDialog

        dlg = DownloadDialog(self.window, fetch=fetch)
        dlg.downloaded.connect(self.use_model)
        dlg.open()
        self._download_dialog = dlg

    def use_model(self, ref: str) -> None:
        """A model the person picked: its own defaults (few-step models want few steps), loaded in the background."""
        d = model_defaults(ref)
        self.state.update(model=ref, width=d.width, height=d.height, steps=d.steps, guidance=d.guidance, scheduler=d.scheduler)
        self.bridge.engine.preload(ref)

    def choose_models_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self.window, "Choose the folder that holds your models")
        if folder:
            self.settings.setValue("models_dir", folder)
            self.refresh_models()

    def refresh_models(self) -> Task:
        """Ask the backend what it can run, on a worker (a folder scan or a server call can take seconds)."""
        folder = str(self.settings.value("models_dir") or models_dir())
        if self._scan is not None:
            self._scan.join()
        backend = self.bridge.engine.backend
        scan = self._scan = Task(lambda: backend.list_models(folder), parent=self)
        scan.done.connect(lambda models: scan is self._scan and self._scanned(models))  # an older scan's is stale
        scan.failed.connect(lambda msg: self.status.emit(f"Could not list the models: {msg}", 8000))
        return scan.start()

    def _scanned(self, models) -> None:
        self.state.set_models(models)
        self.models_scanned.emit()

    def close(self) -> None:
        for task in [self._scan, *self._reads]:
            if task is not None:
                task.join(5)


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
        mask = doc.edit_layers["mask"]
        add("Mask", "mask", qimage_to_rgba(mask.image), mask.settings.visible, mask.settings.opacity)
        data = {
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
        titles = {layer.info.title: k for k, layer in doc.all_layers().items()}  # files edited in Krita keep names
        kinds = data.get("kinds") if isinstance(data.get("kinds"), dict) else {}
        saved_layers = data.get("layers") if isinstance(data.get("layers"), dict) else {}

        def kind_of(layer) -> str:
            return kinds.get(layer.name) or titles.get(layer.name) or layer.name.lower()

        # Layers Noisebrush has no kind for (Krita's "Background", "Paint Layer 1") are the picture: together with
        # the Image layer they become the Image layer, blended as the file shows them; never dropped in silence.
        pictures = [layer for layer in project.layers if kind_of(layer) == "image" or kind_of(layer) not in doc.all_layers()
                    and kind_of(layer) != "result"]  # fmt: skip
        strangers = [layer.name for layer in pictures if kind_of(layer) != "image"]
        doc.undo_stack.beginMacro("Open project")
        try:
            for layer in project.layers:
                kind = kind_of(layer)
                if kind == "result":
                    state.set_result(to_qimage(np.ascontiguousarray(layer.rgba[..., :3])))
                    continue
                if any(layer is p for p in pictures):
                    continue
                self._put_layer(kind, layer.rgba, data)
                self._layer_settings(kind, layer, saved_layers)
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
