"""Files in and out: open (a PNG's settings, a map into a layer, pose JSON), save, export, and picking models.

Everything restored from a file goes into the state model as a restore: nothing generates by accident.
A bad file shows one clear line and changes nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, QSettings, Signal
from PySide6.QtWidgets import QFileDialog, QWidget

from noisebrush.engine.catalog import models_dir
from noisebrush.engine.controls import guess_kind
from noisebrush.engine.errors import UserError
from noisebrush.engine.images import LoadedImage, fit_to, read_image
from noisebrush.engine.metadata import NoSettings, read_saved, save_png
from noisebrush.engine.models import model_defaults
from noisebrush.engine.pose import load_pose_json, people_to_json
from noisebrush.gui.engine_bridge import EngineBridge, to_qimage
from noisebrush.gui.state import AppState
from noisebrush.gui.tasks import Task

IMAGE_FILTER = "Images (*.png *.jpg *.jpeg *.webp *.bmp *.tif *.tiff)"
POSE_FILTER = "Pose maps or OpenPose JSON (*.png *.jpg *.jpeg *.webp *.bmp *.json)"


def about(path: str, message: str) -> str:
    """A failure to open `path` as one sentence that names the file (readers that know it already name it)."""
    name = Path(path).name
    return message if name in message else f"{name}: {message}"


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
        h, w = loaded.image.shape[:2]
        if kind in self.state.doc.layers and self.state.doc.is_empty():  # a first picture sets the document's shape
            self.state.update("restore", width=w, height=h)
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

    def packs_dialog(self, check: str | None = None):
        """File → Get models…: the model packs; the first finished pack's model is selected."""
        from noisebrush.gui.packs_dialog import PacksDialog

        dlg = PacksDialog(Path(str(self.settings.value("models_dir") or models_dir())), self.window)
        if check:
            dlg.check(check)
        dlg.installed.connect(self._pack_installed)
        dlg.open()
        self._download_dialog = dlg
        return dlg

    def _pack_installed(self, ref: str) -> None:
        self.use_model(ref)
        self.refresh_models()  # its ControlNets join the list, and each layer finds its own (state.folder_controlnet)

    def download_adapter_dialog(self, family: str, fetch=None, list_files=None) -> None:
        """h94/IP-Adapter's files for one family's references: the adapter and its image encoder, nothing else."""
        from noisebrush.engine.ip_adapters import HUB_REPO, adapter_plan
        from noisebrush.gui.download_dialog import DownloadDialog

        dlg = DownloadDialog(self.window, HUB_REPO, fetch=fetch, list_files=list_files,
                             planner=lambda sizes: adapter_plan(sizes, family))  # fmt: skip
        dlg.setWindowTitle("Download an IP-Adapter for reference pictures")
        dlg.repo.setReadOnly(True)
        dlg.downloaded.connect(lambda _repo: self.status.emit("The IP-Adapter is ready: generate again", 8000))
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
