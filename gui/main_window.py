"""The main window: canvas in the middle, generation and layer panels at the side, history below."""

from __future__ import annotations

import dataclasses
import json
import random
import sys
import threading
import time
from pathlib import Path

import numpy as np
from noisebrush.engine.errors import UserError
from noisebrush.engine.events import Finished
from noisebrush.engine.images import load_control_image, read_image
from noisebrush.engine.metadata import read_request, save_png
from noisebrush.engine.models import model_defaults
from noisebrush.engine.pose import load_pose_json
from noisebrush.engine.request import GenerationRequest
from noisebrush.gui.autosave import Autosave
from noisebrush.gui.canvas import Canvas
from noisebrush.gui.document import LAYER_TITLES, Document, rgb_to_qimage_argb
from noisebrush.gui.engine_bridge import EngineBridge, to_qimage
from noisebrush.gui.panels import MAX_SEED, GenerationPanel, HistoryStrip, LayersPanel, PanelValues
from PySide6.QtCore import QSettings, QSize, Qt, QTimer, Slot
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import (
    QDockWidget,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMessageBox,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

DOC_LONG_SIDE = 512  # sketch resolution: control maps are scaled down to the output size
AUTOSAVE_MS = 4000
LIVE_MAX_WAIT_S = 0.4  # while a joint is dragged without pause, still regenerate this often
LOAD_OPTION_TITLES = {
    "fp16": "Half precision on the GPU",
    "attention_slicing": "Attention slicing (less GPU memory)",
    "cpu_offload": "Model CPU offload (least GPU memory, slower)",
    "vae_tiling": "VAE tiling (large images)",
    "taesd": "Sharper previews with a tiny autoencoder, when found",
}


class Banner(QFrame):
    """A non-blocking message above the canvas, with optional action button and a close button."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("banner")
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.action = QPushButton()
        self.action.hide()
        close = QPushButton("✕")
        close.setFlat(True)
        close.setFixedWidth(28)
        close.clicked.connect(self.hide)
        row = QHBoxLayout(self)
        row.setContentsMargins(10, 6, 6, 6)
        row.addWidget(self.label, 1)
        row.addWidget(self.action)
        row.addWidget(close)
        self.hide()
        self._callback = None
        self.action.clicked.connect(self._run_action)

    def show_message(self, text: str, kind: str = "error", action: str | None = None, callback=None) -> None:
        colors = {"error": "#f8d7da; color: #58151c", "info": "#dbeafe; color: #0c2d6b"}
        self.setStyleSheet(f"#banner {{ background: {colors[kind].split(';')[0]}; border-radius: 4px; }} "
                           f"QLabel {{ color: {colors[kind].split('color: ')[1]}; }}")  # fmt: skip
        self.label.setText(text)
        self._callback = callback
        self.action.setVisible(bool(action))
        self.action.setText(action or "")
        self.show()

    def _run_action(self) -> None:
        self.hide()
        if self._callback:
            self._callback()


class MainWindow(QMainWindow):
    def __init__(self, bridge: EngineBridge, settings: QSettings, data_dir: Path, default_model: str = "",
                 live_debounce_ms: int = 150, restore: str = "ask") -> None:  # fmt: skip
        super().__init__()
        self.setWindowTitle("Noisebrush")
        self.bridge = bridge
        self.settings = settings
        self.data_dir = Path(data_dir)
        self.autosave = Autosave(self.data_dir)
        self.doc = Document(QSize(DOC_LONG_SIDE, DOC_LONG_SIDE))
        self.canvas = Canvas(self.doc)
        self.panel = GenerationPanel()
        self.layers_panel = LayersPanel(self.doc)
        self.history = HistoryStrip()
        self.banner = Banner()
        self.job: int | None = None
        self.last_request: GenerationRequest | None = None
        self.last_result: Finished | None = None
        self._job_started_at = 0.0
        self._dirty = False
        self._live_pending_since = 0.0

        center = QWidget()
        col = QVBoxLayout(center)
        col.setContentsMargins(4, 4, 4, 4)
        col.addWidget(self.banner)
        col.addWidget(self.canvas, 1)
        col.addWidget(self.history)
        self.setCentralWidget(center)
        self._dock("Generate", self.panel, Qt.DockWidgetArea.RightDockWidgetArea)
        self._dock("Control layers", self.layers_panel, Qt.DockWidgetArea.RightDockWidgetArea, scroll=True)
        self._build_actions()
        self.statusBar().showMessage("Ready")

        self.live_timer = QTimer(self)
        self.live_timer.setSingleShot(True)
        self.live_timer.setInterval(int(settings.value("live_delay_ms", live_debounce_ms)))
        self.live_timer.timeout.connect(lambda: self.generate(latest_wins=True))
        self.autosave_timer = QTimer(self)
        self.autosave_timer.setInterval(AUTOSAVE_MS)
        self.autosave_timer.timeout.connect(self._autosave_if_dirty)
        self.autosave_timer.start()
        self.autosave_soon = QTimer(self)  # after a stroke, once the hand has paused
        self.autosave_soon.setSingleShot(True)
        self.autosave_soon.setInterval(800)
        self.autosave_soon.timeout.connect(self._autosave_if_dirty)
        self._autosave_thread: threading.Thread | None = None

        bridge.started.connect(self._on_started)
        bridge.progress.connect(self._on_progress)
        bridge.preview.connect(self._on_preview)
        bridge.finished.connect(self._on_finished)
        bridge.failed.connect(self._on_failed)
        bridge.cancelled.connect(self._on_cancelled)
        self.panel.generate_requested.connect(self.generate)
        self.panel.cancel_requested.connect(self.cancel)
        self.panel.changed.connect(self._on_setting_changed)
        self.panel.live_toggled.connect(lambda on: on and self._schedule_live())
        self.panel.model_browse_requested.connect(self.browse_model)
        self.panel.model.activated.connect(lambda _i: self._use_model(self.panel.model.currentData() or ""))
        self.panel.width_box.valueChanged.connect(self._resize_document)
        self.panel.height_box.valueChanged.connect(self._resize_document)
        self.layers_panel.changed.connect(self._on_setting_changed)
        self.layers_panel.active_changed.connect(self._set_active_layer)
        self.layers_panel.load_requested.connect(self.load_layer_dialog)
        self.layers_panel.clear_requested.connect(self.doc.clear_layer)
        self.canvas.stroke_finished.connect(self._on_stroke)
        self.canvas.pose_dragged.connect(self._schedule_live)
        self.canvas.files_dropped.connect(self.open_files)
        self.doc.undo_stack.indexChanged.connect(lambda _i: self._mark_dirty())
        self.history.itemClicked.connect(self._on_history_clicked)

        self._restore_settings(default_model)
        self.refresh_models()
        self.autosave.start_session() if restore == "never" else self._offer_recovery(restore)

    # --- layout helpers --------------------------------------------------------------------
    def _dock(self, title: str, widget: QWidget, area, scroll: bool = False) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(title)
        dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable | QDockWidget.DockWidgetFeature.DockWidgetFloatable)
        if scroll:
            area_widget = QScrollArea()
            area_widget.setWidgetResizable(True)
            area_widget.setWidget(widget)
            dock.setWidget(area_widget)
        else:
            dock.setWidget(widget)
        self.addDockWidget(area, dock)
        return dock

    def _action(self, text: str, shortcut, slot, checkable: bool = False) -> QAction:
        act = QAction(text, self)
        if shortcut:
            act.setShortcuts(shortcut if isinstance(shortcut, list) else [QKeySequence(shortcut)])
        act.setCheckable(checkable)
        act.triggered.connect(slot)
        self.addAction(act)
        return act

    def _build_actions(self) -> None:
        self.undo_action = self.doc.undo_stack.createUndoAction(self, "Undo")
        self.undo_action.setShortcut(QKeySequence.StandardKey.Undo)
        self.redo_action = self.doc.undo_stack.createRedoAction(self, "Redo")
        self.redo_action.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")])
        self.generate_action = self._action("Generate", [QKeySequence("Ctrl+Return"), QKeySequence("Ctrl+Enter")], self.generate)
        self.cancel_action = self._action("Cancel", "Esc", self.cancel)
        self.brush_action = self._action("Brush", "B", lambda: self._set_tool("brush"), checkable=True)
        self.eraser_action = self._action("Eraser", "E", lambda: self._set_tool("eraser"), checkable=True)
        self.brush_action.setChecked(True)
        fit = self._action("Fit", "Ctrl+0", self.canvas.fit)
        zoom_in = self._action("Zoom in", QKeySequence.StandardKey.ZoomIn, lambda: self.canvas.zoom(1.25))
        zoom_out = self._action("Zoom out", QKeySequence.StandardKey.ZoomOut, lambda: self.canvas.zoom(0.8))
        clear = self._action("Clear layer", "Ctrl+Backspace", lambda: self.doc.clear_layer(self.canvas.active_layer))
        self._action("Smaller brush", "[", lambda: self._set_brush(self.canvas.brush_size / 1.25))
        self._action("Bigger brush", "]", lambda: self._set_brush(self.canvas.brush_size * 1.25))
        open_act = self._action("Open image or settings…", QKeySequence.StandardKey.Open, self.open_dialog)
        save_act = self._action("Save image…", QKeySequence.StandardKey.Save, self.save_dialog)
        quit_act = self._action("Quit", QKeySequence.StandardKey.Quit, self.close)
        self.brush_size_box = QSpinBox()
        self.brush_size_box.setRange(1, 200)
        self.brush_size_box.setValue(int(self.canvas.brush_size))
        self.brush_size_box.setSuffix(" px")
        self.brush_size_box.setToolTip("Brush size ([ and ])")
        self.brush_size_box.valueChanged.connect(lambda v: setattr(self.canvas, "brush_size", float(v)))

        file_menu = self.menuBar().addMenu("&File")
        file_menu.addAction(open_act)
        load_menu = file_menu.addMenu("Load control map")
        for kind, title in LAYER_TITLES.items():
            load_menu.addAction(self._action(f"{title} map…", None, lambda _=False, k=kind: self.load_layer_dialog(k)))
        file_menu.addAction(self._action("Make control from image…", "Ctrl+Shift+I", self.make_control_dialog))
        file_menu.addSeparator()
        file_menu.addAction(self._action("Download model from Hugging Face…", None, self.download_model_dialog))
        file_menu.addAction(self._action("Choose models folder…", None, self.choose_models_folder))
        file_menu.addAction(save_act)
        file_menu.addSeparator()
        file_menu.addAction(quit_act)
        edit = self.menuBar().addMenu("&Edit")
        for a in (self.undo_action, self.redo_action, clear):
            edit.addAction(a)
        view = self.menuBar().addMenu("&View")
        for a in (fit, zoom_in, zoom_out):
            view.addAction(a)
        pose = self.menuBar().addMenu("&Pose")
        self.add_person_action = self._action("Add person", "Ctrl+Shift+A", lambda: self._pose_do(self.canvas.add_person))
        pose.addAction(self.add_person_action)
        self.remove_person_action = self._action("Remove person", "Delete", lambda: self._pose_do(self.canvas.remove_person))
        self.mirror_action = self._action("Mirror left/right", "M", lambda: self._pose_do(self.canvas.mirror_person))
        pose.addAction(self.remove_person_action)
        pose.addAction(self.mirror_action)
        pose.addAction(self._action("Bigger", "Shift+Up", lambda: self._pose_do(lambda: self.canvas.scale_person(1.1))))
        pose.addAction(self._action("Smaller", "Shift+Down", lambda: self._pose_do(lambda: self.canvas.scale_person(1 / 1.1))))
        pose.addAction(self._action("Show hidden joints", None, lambda: self._pose_do(self.canvas.show_all_joints)))
        pose.addSeparator()
        pose.addAction(self._action("Import OpenPose JSON…", None, lambda: self.load_layer_dialog("pose")))
        pose.addAction(self._action("Export OpenPose JSON…", None, self.export_pose_dialog))
        tip = QAction(
            "Drag a joint to move it, drag inside a person (or Shift+drag) to move them, right-click a joint to hide it", self
        )
        tip.setEnabled(False)
        pose.addSeparator()
        pose.addAction(tip)
        settings_menu = self.menuBar().addMenu("&Settings")
        for key, title in LOAD_OPTION_TITLES.items():
            act = QAction(title, self, checkable=True)
            act.setChecked(self.settings.value(f"load/{key}", False, type=bool))
            act.toggled.connect(lambda on, k=key: self._set_load_option(k, on))
            settings_menu.addAction(act)
        settings_menu.addSeparator()
        settings_menu.addAction(self._action("Live mode delay…", None, self.ask_live_delay))
        gen = self.menuBar().addMenu("&Generate")
        gen.addAction(self.generate_action)
        gen.addAction(self.cancel_action)
        help_menu = self.menuBar().addMenu("&Help")
        help_menu.addAction(self._action("Keyboard shortcuts", "F1", self.show_shortcuts))
        help_menu.addAction(self._action("About Noisebrush", None, self.show_about))

        tb = QToolBar("Tools")
        tb.setObjectName("tools")
        tb.setMovable(False)
        for a in (self.brush_action, self.eraser_action):
            tb.addAction(a)
        tb.addWidget(QLabel(" Size "))
        tb.addWidget(self.brush_size_box)
        tb.addSeparator()
        for a in (self.undo_action, self.redo_action, clear):
            tb.addAction(a)
        tb.addSeparator()
        for a in (fit, zoom_in, zoom_out):
            tb.addAction(a)
        self.addToolBar(tb)

    def show_shortcuts(self) -> None:
        rows = [
            (a.text(), a.shortcut().toString(QKeySequence.SequenceFormat.NativeText))
            for a in self.actions()
            if not a.shortcut().isEmpty()
        ]
        rows += [(self.undo_action.text() or "Undo", "Ctrl+Z"), ("Redo", "Ctrl+Shift+Z"), ("Pan", "Middle drag or Alt+drag"),
                 ("Zoom", "Mouse wheel")]  # fmt: skip
        text = "".join(f"<tr><td>{name}</td><td><b>{keys}</b></td></tr>" for name, keys in sorted(set(rows)))
        box = QMessageBox(QMessageBox.Icon.NoIcon, "Keyboard shortcuts", f"<table cellspacing=6>{text}</table>", parent=self)
        box.setModal(False)
        box.show()

    def show_about(self) -> None:
        from noisebrush import __version__

        QMessageBox.about(self, "About Noisebrush", f"<b>Noisebrush {__version__}</b><br>Draw with a diffusion model. "
                          "The embedded model was trained by Noisebrush on a procedural world; it runs offline.")  # fmt: skip

    def ask_live_delay(self) -> None:
        from PySide6.QtWidgets import QInputDialog

        ms, ok = QInputDialog.getInt(self, "Live mode delay", "Wait this long after a stroke or change (ms):",
                                     self.live_timer.interval(), 0, 2000, 10)  # fmt: skip
        if ok:
            self.set_live_delay(ms)

    def set_live_delay(self, ms: int) -> None:
        self.live_timer.setInterval(ms)
        self.settings.setValue("live_delay_ms", ms)

    def _set_load_option(self, key: str, on: bool) -> None:
        self.settings.setValue(f"load/{key}", on)
        self.statusBar().showMessage("Model loading options apply from the next start of Noisebrush", 8000)

    def _set_tool(self, tool: str) -> None:
        self.canvas.tool = tool
        self.brush_action.setChecked(tool == "brush")
        self.eraser_action.setChecked(tool == "eraser")

    def _set_brush(self, size: float) -> None:
        self.brush_size_box.setValue(int(max(1, min(200, round(size)))))

    def _set_active_layer(self, kind: str) -> None:
        self.canvas.active_layer = kind
        self.canvas.update()

    def _pose_do(self, fn) -> None:
        """Run a pose-editor action on the pose layer (selecting it first)."""
        self.layers_panel.set_active("pose")
        if self.canvas.selected_person is None and self.doc.layers["pose"].people:
            self.canvas.selected_person = 0
        fn()
        self.canvas.update()

    def export_pose_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export pose", "pose.json", "OpenPose JSON (*.json)")
        if path:
            self.export_pose(path)

    def export_pose(self, path: str) -> None:
        from noisebrush.engine.pose import people_to_json

        data = people_to_json(self.doc.layers["pose"].people, self.doc.size.width(), self.doc.size.height())
        try:
            Path(path).write_text(json.dumps(data, indent=1))
        except OSError as exc:
            self.show_error(f"Could not write {path}: {exc}")

    # --- requests --------------------------------------------------------------------------
    def capture_request(self) -> GenerationRequest:
        """Freeze the current sketch and settings into one request (on the GUI thread)."""
        v = self.panel.values()
        if not v.seed_locked:
            # showing the new seed is not a user edit: it must not trigger another live frame
            self.panel.seed.blockSignals(True)
            self.panel.seed.setValue(random.randint(0, MAX_SEED))
            self.panel.seed.blockSignals(False)
            v = self.panel.values()
        return GenerationRequest(
            prompt=v.prompt, negative_prompt=v.negative, controls=self.doc.active_specs(v.width, v.height), steps=v.steps,
            guidance=v.guidance, seed=v.seed, width=v.width, height=v.height, scheduler=v.scheduler, model=v.model,
        )  # fmt: skip

    @Slot()
    def generate(self, latest_wins: bool = False) -> int | None:
        try:
            req = self.capture_request()
            req.validate()
        except UserError as exc:
            self.show_error(str(exc))
            return None
        self.last_request = req
        self.job = self.bridge.submit(req, latest_wins=latest_wins or self.panel.live.isChecked())
        self._job_started_at = time.perf_counter()
        self.panel.set_running(True)
        return self.job

    @Slot()
    def cancel(self) -> None:
        self.live_timer.stop()
        if self.job is not None:
            self.bridge.cancel(self.job)

    def _schedule_live(self) -> None:
        """Debounce live frames; a continuous edit (a joint drag) still gets a frame every LIVE_MAX_WAIT_S."""
        if not self.panel.live.isChecked():
            return
        now = time.perf_counter()
        if not self.live_timer.isActive():
            self._live_pending_since = now
        if now - self._live_pending_since >= LIVE_MAX_WAIT_S:
            self.live_timer.stop()
            self.generate(latest_wins=True)
            return
        self.live_timer.start()

    def _on_stroke(self, _kind: str) -> None:
        self._mark_dirty()
        self.autosave_soon.start()
        self._schedule_live()

    def _on_setting_changed(self) -> None:
        self._mark_dirty()
        self._schedule_live()

    # --- engine events (GUI thread) ---------------------------------------------------------
    def _on_started(self, job: int) -> None:
        if job == self.job:
            self._job_started_at = time.perf_counter()
            self.statusBar().showMessage("Generating…")

    def _on_progress(self, job: int, message: str) -> None:
        if job == self.job:
            self.statusBar().showMessage(message)

    def _on_preview(self, job: int, step: int, total: int, image: np.ndarray, elapsed: float) -> None:
        if job != self.job:
            return  # a superseded job's late frame
        self.canvas.show_result(to_qimage(image), preview=True)
        remaining = elapsed / step * (total - step) if step else None
        self.panel.show_progress(step, total, remaining)

    def _on_finished(self, job: int, ev: Finished) -> None:
        qimg = to_qimage(ev.image)
        self.history.add_result(qimg, ev)
        if job != self.job:
            return
        self.job = None
        self.last_result = ev
        self.canvas.show_result(qimg)
        self.panel.set_running(False)
        self.panel.progress_label.setText(" ")
        self.statusBar().showMessage(
            f"Done in {ev.elapsed_s:.2f} s · seed {ev.params.seed} · {ev.params.width}×{ev.params.height}"
        )

    def _on_failed(self, job: int, message: str) -> None:
        if job == self.job:
            self.job = None
            self.panel.set_running(False)
        self.show_error(message)

    def _on_cancelled(self, job: int, at_step: int) -> None:
        if job == self.job:
            self.job = None
            self.panel.set_running(False)
            self.statusBar().showMessage(f"Cancelled after {at_step} step(s)")

    def show_error(self, message: str) -> None:
        self.banner.show_message(message, "error")
        self.statusBar().showMessage(message.splitlines()[0], 8000)

    # --- files -----------------------------------------------------------------------------
    def load_layer_dialog(self, kind: str) -> None:
        filters = "Images (*.png *.jpg *.jpeg *.webp *.bmp *.tif *.tiff)"
        if kind == "pose":
            filters = "Pose maps or OpenPose JSON (*.png *.jpg *.jpeg *.webp *.bmp *.json)"
        path, _ = QFileDialog.getOpenFileName(self, f"Load {kind} map", "", filters)
        if path:
            self.load_layer_file(kind, path)

    def load_layer_file(self, kind: str, path: str) -> bool:
        """Load a control map into a layer. A bad file shows a message and changes nothing."""
        w, h = self.doc.size.width(), self.doc.size.height()
        try:
            if kind == "pose" and path.lower().endswith(".json"):
                try:
                    people = load_pose_json(path, w, h)
                except ValueError as exc:
                    raise UserError(str(exc)) from None
                self.set_layer_from_map(kind, np.zeros((h, w, 3), np.uint8), people, "Load pose")
            else:
                loaded = load_control_image(kind, path, w, h)
                self.set_layer_from_map(kind, loaded.image, None, f"Load {kind} map")
                if loaded.notes:
                    self.statusBar().showMessage("; ".join(loaded.notes), 8000)
        except UserError as exc:
            self.show_error(str(exc))
            return False
        self.layers_panel.set_active(kind)
        self._on_stroke(kind)
        return True

    def set_layer_from_map(self, kind: str, rgb: np.ndarray, people, text: str) -> None:
        """A control map in the engine's convention → the layer as the person sees it (undoable)."""
        if kind == "scribble":
            # maps hold white-on-black scribbles; the layer shows ink on paper
            img = rgb_to_qimage_argb(np.full_like(rgb, 25), rgb.max(axis=2))
        elif kind == "pose":
            img = rgb_to_qimage_argb(rgb, np.where(rgb.any(axis=2), 255, 0).astype(np.uint8))
            if people is not None:  # detected skeletons stay editable; the picture is not kept twice
                img = rgb_to_qimage_argb(np.zeros_like(rgb), np.zeros(rgb.shape[:2], np.uint8))
        else:
            img = rgb_to_qimage_argb(rgb)
        self.doc.set_layer_image(kind, img, text, people)

    def make_control_dialog(self) -> None:
        from noisebrush.gui.preprocess_dialog import PreprocessDialog

        dlg = PreprocessDialog(self, self.doc.size.width(), self.doc.size.height())
        dlg.accepted_map.connect(self._use_preprocessed)
        dlg.open()
        self._preprocess_dialog = dlg

    def _use_preprocessed(self, kind: str, image: np.ndarray, people) -> None:
        self.set_layer_from_map(kind, image, people, f"Make {kind} map")
        self.layers_panel.set_active(kind)
        self._on_stroke(kind)

    def open_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open", "", "Images and pose JSON (*.png *.jpg *.jpeg *.webp *.json)")
        if path:
            self.open_files([path])

    def open_files(self, paths: list[str]) -> None:
        """Dropped or opened files: a Noisebrush/A1111 PNG restores settings; other images load into the active layer."""
        for path in paths:
            if path.lower().endswith(".json"):
                self.load_layer_file("pose", path)
            elif not (path.lower().endswith(".png") and self.restore_from_png(path, quiet=True)):
                self.load_layer_file(self.canvas.active_layer, path)

    def restore_from_png(self, path: str, quiet: bool = False) -> bool:
        """Restore a PNG's settings and show its image. quiet: a PNG without settings is no error (it is a map)."""
        try:
            req = read_request(path)
            image = read_image(path).image
        except UserError as exc:
            if not quiet:
                self.show_error(str(exc))
            return False
        self.apply_request(req)
        self.canvas.show_result(to_qimage(image))
        self.statusBar().showMessage(f"Settings restored from {Path(path).name}", 6000)
        return True

    def apply_request(self, req: GenerationRequest) -> None:
        v = self.panel.values()
        self.panel.set_values(dataclasses.replace(
            v, prompt=req.prompt, negative=req.negative_prompt, model=req.model, steps=req.steps, guidance=req.guidance,
            seed=req.seed if req.seed is not None else v.seed, seed_locked=req.seed is not None, width=req.width,
            height=req.height, scheduler=req.scheduler, live=v.live,
        ))  # fmt: skip
        for c in req.controls:
            box = self.layers_panel.boxes[c.kind]
            if c.model:
                box.add_controlnet(Path(c.model).name, c.model)
            box.controlnet.setCurrentIndex(max(0, box.controlnet.findData(c.model or "")))
            box.weight.setValue(int(round(c.weight * 100)))
            box.start.setValue(int(round(c.start * 100)))
            box.end.setValue(int(round(c.end * 100)))

    def save_dialog(self) -> None:
        if self.last_result is None:
            self.show_error("Nothing to save yet: generate an image first.")
            return
        path, _ = QFileDialog.getSaveFileName(self, "Save image", f"noisebrush-{self.last_result.params.seed}.png", "PNG (*.png)")
        if path:
            self.save_result(path)

    def save_result(self, path: str) -> bool:
        ev = self.last_result
        if ev is None:
            return False
        if not path.lower().endswith(".png"):
            path += ".png"
        try:
            save_png(ev.image, ev.params, path, ev.model_name)
        except (OSError, UserError) as exc:
            self.show_error(f"Could not save {path}: {exc}")
            return False
        self.statusBar().showMessage(f"Saved {path}", 6000)
        return True

    def browse_model(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a diffusers model folder")
        if folder:
            if not (Path(folder) / "model_index.json").is_file():
                self.show_error(f"{folder} is not a diffusers model folder: it has no model_index.json")
                return
            self._use_model(folder)

    def download_model_dialog(self, fetch=None) -> None:
        from noisebrush.gui.download_dialog import DownloadDialog

        dlg = DownloadDialog(self, fetch=fetch)
        dlg.downloaded.connect(self._use_model)
        dlg.open()
        self._download_dialog = dlg

    def _use_model(self, ref: str) -> None:
        """A model the person picked: its own defaults (few-step models want few steps), loaded in the background."""
        self.panel.set_model(ref)
        d = model_defaults(ref)
        v = self.panel.values()
        self.panel.set_values(dataclasses.replace(v, width=d.width, height=d.height, steps=d.steps, guidance=d.guidance,
                                                  scheduler=d.scheduler))  # fmt: skip
        self.bridge.engine.preload(ref)

    def choose_models_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose the folder that holds your models")
        if folder:
            self.settings.setValue("models_dir", folder)
            self.refresh_models()

    def refresh_models(self) -> None:
        """Offer every usable base model of the models folder in the model picker."""
        from noisebrush.engine.catalog import models_dir, scan

        folder = self.settings.value("models_dir") or str(models_dir())
        family_names = {"sd15": "SD1.5", "sdxl": "SDXL"}
        for entry in scan(Path(folder)):
            if not entry.usable:
                continue
            title = f"{entry.name} · {family_names[entry.family]} · {entry.size_bytes / 1e9:.1f} GB"
            if entry.role == "base":
                self.panel.add_model(title, str(entry.path))
            elif entry.role == "controlnet":
                kinds = [entry.control_kind] if entry.control_kind else list(self.layers_panel.boxes)
                for kind in kinds:
                    self.layers_panel.boxes[kind].add_controlnet(title, str(entry.path))

    def _on_history_clicked(self, item) -> None:
        ev: Finished = item.data(Qt.ItemDataRole.UserRole)
        self.last_result = ev
        self.canvas.show_result(to_qimage(ev.image))
        self.apply_request(ev.params)

    def _resize_document(self) -> None:
        v = self.panel.values()
        scale = DOC_LONG_SIDE / max(v.width, v.height)
        size = QSize(max(8, round(v.width * scale)), max(8, round(v.height * scale)))
        if size != self.doc.size:
            self.doc.resize(size)
            self.canvas.show_result(None)
            self.canvas.fit()

    # --- persistence -----------------------------------------------------------------------
    def _mark_dirty(self) -> None:
        self._dirty = True

    def _autosave_if_dirty(self) -> None:
        """Snapshot on the GUI thread, encode and write the PNGs on a short-lived thread (keeps strokes smooth)."""
        if not self._dirty:
            return
        if self._autosave_thread is not None and self._autosave_thread.is_alive():
            self.autosave_soon.start()  # one write at a time; try again shortly
            return
        self._dirty = False
        snap = self.autosave.snapshot(self.doc, self.panel.values())

        def write() -> None:
            try:
                self.autosave.write(snap)
            except OSError as exc:
                print(f"noisebrush: autosave failed: {exc}", file=sys.stderr)

        self._autosave_thread = threading.Thread(target=write, name="noisebrush-autosave", daemon=True)
        self._autosave_thread.start()

    def autosave_now(self) -> None:
        """Write the sketch synchronously (on quit, and for tests)."""
        if self._autosave_thread is not None:
            self._autosave_thread.join()
        self._dirty = False
        try:
            self.autosave.save(self.doc, self.panel.values())
        except OSError as exc:
            self.statusBar().showMessage(f"Autosave failed: {exc}", 8000)

    def _offer_recovery(self, policy: str) -> None:
        crashed = self.autosave.has_crash_recovery()
        self.autosave.start_session()
        if not crashed:
            return
        if policy == "always":
            self.restore_autosave()
        elif policy == "ask":
            self.banner.show_message("Noisebrush did not close properly last time. Your sketch was autosaved.", "info",
                                     "Restore sketch", self.restore_autosave)  # fmt: skip

    def restore_autosave(self) -> bool:
        values = self.autosave.load(self.doc)
        if values is None:
            return False
        self.panel.set_values(values)
        for box in self.layers_panel.boxes.values():
            box.refresh()
        self.statusBar().showMessage("Sketch restored from autosave", 6000)
        return True

    def _restore_settings(self, default_model: str) -> None:
        raw = self.settings.value("panel")
        values = PanelValues()
        d = model_defaults(default_model)
        values = dataclasses.replace(values, model=default_model, width=d.width, height=d.height, steps=d.steps,
                                     guidance=d.guidance, scheduler=d.scheduler)  # fmt: skip
        if isinstance(raw, str):
            try:
                saved = json.loads(raw)
                known = PanelValues.__dataclass_fields__
                values = dataclasses.replace(values, **{k: v for k, v in saved.items() if k in known})
            except (json.JSONDecodeError, TypeError):
                pass
        if values.model and not Path(values.model).is_dir():
            values = dataclasses.replace(values, model=default_model)
        values = dataclasses.replace(values, live=False)  # live mode is opt-in per session
        self.panel.set_values(values)
        self._resize_document()
        geometry = self.settings.value("geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        else:
            self.resize(1280, 860)

    def save_settings(self) -> None:
        self.settings.setValue("panel", json.dumps(dataclasses.asdict(self.panel.values())))
        self.settings.setValue("geometry", self.saveGeometry())
        self.settings.sync()

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
        """Cancel what runs, stop the engine thread, save everything, and end the session cleanly."""
        self.live_timer.stop()
        self.autosave_timer.stop()
        self.autosave_soon.stop()
        self.save_settings()
        self.autosave_now()
        if not self.bridge.shutdown(30):
            QMessageBox.warning(self, "Noisebrush", "The engine did not stop in time.")
        self.autosave.end_session()
        event.accept()
