"""The main window: layout and wiring only. Canvas in the middle, the Generate and Control layers panels at the
side, history below. The concerns live in their own modules: the state model (state.py), jobs and live mode
(jobs.py), files (files.py), persistence (persistence.py), menus and shortcuts (actions.py)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings, Qt
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import QDockWidget, QMainWindow, QMessageBox, QScrollArea, QVBoxLayout, QWidget

from noisebrush.engine.request import GenerationRequest
from noisebrush.gui.actions import ActionsMixin
from noisebrush.gui.canvas import Canvas
from noisebrush.gui.engine_bridge import EngineBridge
from noisebrush.gui.files import Files
from noisebrush.gui.jobs import Jobs
from noisebrush.gui.layer_panel import LayersPanel
from noisebrush.gui.panels import GenerationPanel, HistoryStrip
from noisebrush.gui.persistence import Persistence, initial_settings
from noisebrush.gui.state import AppState
from noisebrush.gui.widgets import Banner


class MainWindow(ActionsMixin, QMainWindow):
    def __init__(self, bridge: EngineBridge, settings: QSettings, data_dir: Path, default_model: str = "",
                 live_debounce_ms: int = 150, restore: str = "ask") -> None:  # fmt: skip
        super().__init__()
        self.setWindowTitle("Noisebrush")
        self.bridge, self.settings, self.data_dir = bridge, settings, Path(data_dir)
        self.state = AppState(initial_settings(settings, default_model))
        self.doc = self.state.doc
        self.jobs = Jobs(self.state, bridge, int(settings.value("live_delay_ms", live_debounce_ms)), self)
        self.files = Files(self.state, bridge, settings, self)
        self.persistence = Persistence(self.state, settings, self.data_dir, self)
        self.autosave = self.persistence.autosave
        self.canvas = Canvas(self.doc)
        self.panel = GenerationPanel(self.state)
        self.layers_panel = LayersPanel(self.state)
        self.history = HistoryStrip()
        self.history.bind(self.state)
        self.banner = Banner()

        center = QWidget()
        col = QVBoxLayout(center)
        col.setContentsMargins(4, 4, 4, 4)
        col.addWidget(self.banner)
        col.addWidget(self.canvas, 1)
        col.addWidget(self.history)
        self.setCentralWidget(center)
        self._dock("Generate", self.panel, Qt.DockWidgetArea.RightDockWidgetArea)
        self._dock("Control layers", self.layers_panel, Qt.DockWidgetArea.RightDockWidgetArea, scroll=True)
        self.build_actions()
        self.statusBar().showMessage("Ready")
        self._wire()

        geometry = settings.value("geometry")
        self.restoreGeometry(geometry) if geometry is not None else self.resize(1280, 860)
        self.files.refresh_models()
        crashed = self.persistence.start_session()
        if crashed and restore == "always":
            self.persistence.restore_autosave()
        elif crashed and restore == "ask":
            self._offer_recovery()

    def _wire(self) -> None:
        state, jobs, files = self.state, self.jobs, self.files
        state.result_changed.connect(self.canvas.show_result)
        for source in (jobs, files, self.persistence):
            source.status.connect(lambda msg, ms: self.statusBar().showMessage(msg, ms))
        for source in (jobs, files):
            source.error.connect(self.show_error)
        jobs.running.connect(self.panel.set_running)
        jobs.running.connect(lambda on: on or self.panel.progress_label.setText(" "))
        jobs.progress.connect(self.panel.show_progress)
        files.edited.connect(self._edited_layer)
        self.panel.generate_requested.connect(self.generate)
        self.panel.cancel_requested.connect(self.cancel)
        self.panel.model_browse_requested.connect(files.browse_model)
        self.panel.model.activated.connect(lambda _i: files.use_model(self.panel.model.currentData() or ""))
        self.layers_panel.active_changed.connect(self._set_active_layer)
        self.layers_panel.load_requested.connect(files.load_layer_dialog)
        self.layers_panel.clear_requested.connect(self.doc.clear_layer)
        self.canvas.stroke_finished.connect(self._on_stroke)
        self.canvas.pose_dragged.connect(jobs.edited)
        self.canvas.files_dropped.connect(self.open_files)

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

    # --- what the panels and tests call ----------------------------------------------------
    @property
    def job(self) -> int | None:
        return self.state.job

    @property
    def last_result(self):
        return self.state.last_result

    def capture_request(self) -> GenerationRequest:
        return self.state.capture_request()

    def generate(self, latest_wins: bool = False) -> int | None:
        return self.jobs.generate(latest_wins)

    def cancel(self) -> None:
        self.jobs.cancel()

    def open_files(self, paths: list[str]) -> None:
        self.files.open_files(paths, self.canvas.active_layer)

    def load_layer_file(self, kind: str, path: str) -> bool:
        return self.files.load_layer_file(kind, path)

    def save_result(self, path: str) -> bool:
        return self.files.save_result(path)

    def refresh_models(self):
        return self.files.refresh_models()

    def autosave_now(self) -> None:
        self.persistence.autosave_now()

    def show_error(self, message: str) -> None:
        self.banner.show_message(message, "error")
        self.statusBar().showMessage(message.splitlines()[0], 8000)

    def make_control_dialog(self) -> None:
        from noisebrush.gui.preprocess_dialog import PreprocessDialog

        dlg = PreprocessDialog(self, self.doc.size.width(), self.doc.size.height())
        dlg.accepted_map.connect(self.files.use_map)
        dlg.open()
        self._preprocess_dialog = dlg

    def _edited_layer(self, kind: str) -> None:
        self.layers_panel.set_active(kind)
        self._on_stroke(kind)

    def _on_stroke(self, _kind: str) -> None:
        self.persistence.mark_dirty(soon=True)
        self.jobs.edited()

    def _offer_recovery(self) -> None:
        self.banner.show_message("Noisebrush did not close properly last time. Your sketch was autosaved.", "info",
                                 "Restore sketch", self.persistence.restore_autosave)  # fmt: skip

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
        """Cancel what runs, stop the engine thread, save everything, and end the session cleanly."""
        self.jobs.live.stop()
        self.persistence.save_settings(self.saveGeometry())
        self.files.close()
        if not self.bridge.shutdown(30):
            QMessageBox.warning(self, "Noisebrush", "The engine did not stop in time.")
        self.persistence.close()
        event.accept()
