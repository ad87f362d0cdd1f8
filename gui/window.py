"""The main window: layout and wiring only. Canvas in the middle, the Generate and Control layers panels at the
side, history below. The concerns live in their own modules: the state model (state.py), jobs and live mode
(jobs.py), files (files.py), persistence (persistence.py), menus and shortcuts (actions.py)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings, Qt
from PySide6.QtGui import QCloseEvent, QIcon
from PySide6.QtWidgets import QDockWidget, QMainWindow, QMessageBox, QScrollArea, QSplitter, QVBoxLayout, QWidget

from noisebrush.engine.paths import assets_dir
from noisebrush.engine.request import GenerationRequest
from noisebrush.gui.actions import ActionsMixin
from noisebrush.gui.canvas import Canvas
from noisebrush.gui.engine_bridge import EngineBridge
from noisebrush.gui.engine_settings import EngineChoice, EngineDialog, EngineSwitcher
from noisebrush.gui.files import Files
from noisebrush.gui.history import HistoryStore
from noisebrush.gui.jobs import Jobs
from noisebrush.gui.layer_panel import LayersPanel
from noisebrush.gui.panels import GenerationPanel, HistoryStrip
from noisebrush.gui.persistence import Persistence, initial_settings
from noisebrush.gui.projects import Projects
from noisebrush.gui.state import AppState
from noisebrush.gui.widgets import Banner, wheel_needs_focus


class MainWindow(ActionsMixin, QMainWindow):
    def __init__(self, bridge: EngineBridge, settings: QSettings, data_dir: Path, default_model: str = "",
                 live_debounce_ms: int = 150, restore: str = "ask") -> None:  # fmt: skip
        super().__init__()
        self.setWindowTitle("Noisebrush")
        self.bridge, self.settings, self.data_dir = bridge, settings, Path(data_dir)
        self.state = AppState(initial_settings(settings, default_model), parent=self)
        self.doc = self.state.doc
        self.jobs = Jobs(self.state, bridge, int(settings.value("live_delay_ms", live_debounce_ms)), self)
        self.files = Files(self.state, bridge, settings, self)
        self.projects = Projects(self.state, settings, self)
        self.engine_switcher = EngineSwitcher(self.state, bridge, self.files, settings, self)
        self.history_store = HistoryStore(self.state, self.data_dir / "history", self)
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
        self._side_dock()
        self.build_actions()
        wheel_needs_focus(self.panel)
        wheel_needs_focus(self.layers_panel)
        self.setWindowIcon(QIcon(str(assets_dir() / "icons" / "noisebrush.png")))
        self.statusBar().showMessage("Ready")
        if self.dark_action.isChecked():
            self.set_dark(True)
        self._wire()

        geometry = settings.value("geometry")
        self.restoreGeometry(geometry) if geometry is not None else self.resize(1280, 860)
        self._live_offered: set[str] = set()
        self.files.models_scanned.connect(self._offer_packs)
        self.files.refresh_models()
        self.history_store.load()
        orphans = self.persistence.start_session()
        if orphans and restore == "always":
            self.persistence.restore_autosave(orphans[0])
        elif orphans and restore == "ask":
            self._offer_recovery()

    def _wire(self) -> None:
        state, jobs, files = self.state, self.jobs, self.files
        state.result_changed.connect(self.canvas.show_result)
        for source in (jobs, files, self.persistence, self.projects, self.engine_switcher):
            source.status.connect(lambda msg, ms: self.statusBar().showMessage(msg, ms))
        for source in (jobs, files, self.projects, self.engine_switcher):
            source.error.connect(self.show_error)
        self.projects.notice.connect(lambda msg: self.banner.show_message(msg, "info"))
        jobs.running.connect(self.panel.set_running)
        state.settings_changed.connect(lambda names, _origin: "live" in names and self._offer_live_lora())
        jobs.succeeded.connect(self.banner.hide_error)  # an error banner goes once a later action works
        jobs.progress.connect(self.panel.show_progress)
        files.edited.connect(self._edited_layer)
        self.panel.generate_requested.connect(self.generate)
        self.panel.cancel_requested.connect(self.cancel)
        self.panel.model_browse_requested.connect(files.browse_model)
        self.panel.model.activated.connect(lambda _i: files.use_model(self.panel.model.currentData() or ""))
        self.layers_panel.active_changed.connect(self._set_active_layer)
        self.layers_panel.regions.edited.connect(lambda: self._on_stroke(""))  # a region's prompt typed, or one added
        self.layers_panel.regions.error.connect(self.show_error)
        self.layers_panel.references.edited.connect(lambda: self._on_stroke(""))  # a reference came, went or changed
        self.layers_panel.references.error.connect(self.show_error)
        self.layers_panel.load_requested.connect(files.load_layer_dialog)
        self.layers_panel.clear_requested.connect(self.doc.clear_layer)
        self.canvas.stroke_finished.connect(self._on_stroke)
        self.canvas.drag_moved.connect(jobs.edited)
        self.canvas.files_dropped.connect(self.open_files)

    def _side_dock(self) -> None:
        """Generate on top at its natural height; the layers take the rest and scroll (the splitter moves between)."""
        layers = QScrollArea()
        layers.setWidgetResizable(True)
        layers.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        layers.setWidget(self.layers_panel)
        self.side = QSplitter(Qt.Orientation.Vertical)
        self.side.addWidget(self.panel)
        self.side.addWidget(layers)
        self.side.setStretchFactor(0, 0)
        self.side.setStretchFactor(1, 1)
        self.side.setCollapsible(0, False)
        self.side.setCollapsible(1, False)
        dock = QDockWidget("Generate", self)
        dock.setObjectName("Generate")
        dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable | QDockWidget.DockWidgetFeature.DockWidgetFloatable)
        dock.setWidget(self.side)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)

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
        """Opened, dropped or passed on the command line: .ora projects, and everything Files opens."""
        for path in paths:
            self.projects.open(path) if path.lower().endswith(".ora") else self.files.open_files([path])

    def load_layer_file(self, kind: str, path: str) -> bool:
        return self.files.load_layer_file(kind, path)

    def save_result(self, path: str) -> bool:
        return self.files.save_result(path)

    def refresh_models(self):
        return self.files.refresh_models()

    def autosave_now(self) -> None:
        self.persistence.autosave_now()

    def show_error(self, message: str) -> None:
        from noisebrush.engine.ip_adapters import missing_family

        family = missing_family(message)  # a reference with no IP-Adapter: offer the download, as the message says
        if family is not None:
            self.banner.show_message(message, "error", "Download IP-Adapter…",
                                     lambda: self.files.download_adapter_dialog(family))  # fmt: skip
        else:
            self.banner.show_message(message, "error")
        self.statusBar().showMessage(message.splitlines()[0], 8000)

    def engine_dialog(self) -> EngineDialog:
        dlg = EngineDialog(EngineChoice.load(self.settings), self)
        dlg.chosen.connect(self.engine_switcher.apply)
        dlg.open()
        self._engine_dialog = dlg
        return dlg

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
        """One offer per sketch left by a session that did not close properly, newest first."""
        orphans = self.autosave.orphans()
        if not orphans:
            return
        more = f" ({len(orphans)} sketches in all: each is offered in turn)" if len(orphans) > 1 else ""
        self.banner.show_message(f"Noisebrush did not close properly last time. Your sketch was autosaved.{more}",
                                 "info", "Restore sketch", self._restore_and_offer_next)  # fmt: skip

    def _offer_packs(self) -> None:
        """Once, on a first start with no model of the person's own: model packs, in one click."""
        if self.settings.value("packs_offered", False, type=bool) or self.banner.isVisible():
            return  # offered before, or a recovery offer or an error is showing
        own = self.state.settings.model or any(m.role == "base" and m.ref for m in self.state.models)
        if own or EngineChoice.load(self.settings).on_servers:
            return
        self.settings.setValue("packs_offered", True)
        self.banner.show_message("Noisebrush draws with its small embedded model (128 px). For real pictures, get a "
                                 "model: SD1.5, SDXL or Flux with their ControlNets, in one click (File → Get models…).",
                                 "info", "Get models…", lambda: self.files.packs_dialog("sd15"))  # fmt: skip

    def _offer_live_lora(self) -> None:
        """Live switched on for an SD1.5 or SDXL model with no accelerator LoRA: each frame runs every step. Say so
        once per model, with the pack that fixes it."""
        s, info = self.state.settings, self.state.accelerable_model()
        if not s.live or info is None or self.state.live_accelerator() or self.banner.isVisible():
            return
        if s.model in self._live_offered:
            return
        self._live_offered.add(s.model)
        pack = "live-sd15" if info.family == "sd15" else "live-sdxl"
        self.banner.show_message(f"Live frames run all {s.steps} steps on this model. An accelerator LoRA (Hyper-SD, "
                                 f"8 steps) makes them several times faster; Generate keeps your steps.", "info",
                                 "Get the live LoRA…", lambda: self.files.packs_dialog(pack))  # fmt: skip

    def _restore_and_offer_next(self) -> None:
        self.persistence.restore_autosave()
        self._offer_recovery()

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
        """Cancel what runs, stop the engine thread, save everything, and end the session cleanly."""
        self.jobs.live.stop()
        self.persistence.save_settings(self.saveGeometry())
        self.files.close()
        self.engine_switcher.close()
        self.history_store.close()
        if not self.bridge.shutdown(30):
            QMessageBox.warning(self, "Noisebrush", "The engine did not stop in time.")
        self.persistence.close()
        event.accept()
