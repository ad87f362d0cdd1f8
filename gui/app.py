"""Builds the app: QApplication, the engine and its bridge, the main window."""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtCore import QSettings, QStandardPaths
from PySide6.QtWidgets import QApplication

from noisebrush.engine.device import LoadOptions, default_threads
from noisebrush.engine.engine import Engine
from noisebrush.engine.errors import UserError
from noisebrush.gui.engine_bridge import EngineBridge
from noisebrush.gui.window import MainWindow

APP_NAME = "Noisebrush"


def app_data_dir() -> Path:
    path = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation)
    return Path(path or Path.home() / ".noisebrush")


def load_options(settings: QSettings) -> LoadOptions:
    """The Settings menu's model-loading options (they take effect when the engine starts)."""

    def on(key: str) -> bool:
        return settings.value(f"load/{key}", False, type=bool)

    return LoadOptions(
        fp16=None if not on("fp16") else True,
        attention_slicing=on("attention_slicing"),
        cpu_offload=on("cpu_offload"),
        sequential_offload=on("sequential_offload"),
        vae_tiling=on("vae_tiling"),
        preview_decoder="auto" if on("taesd") else "linear",
    )


def create_main_window(
    engine: Engine | None = None,
    *,
    model: str = "",
    settings: QSettings | None = None,
    data_dir: Path | None = None,
    live_debounce_ms: int = 150,
    preview_interval_s: float = 1 / 30,
    restore: str = "ask",
) -> MainWindow:
    """The whole window wired to a real engine (one is made when not given). A QApplication must exist."""
    app = QApplication.instance()
    if app is not None:
        app.setApplicationName(APP_NAME)
        app.setOrganizationName(APP_NAME)
    settings = settings if settings is not None else QSettings(APP_NAME, APP_NAME)
    note = ""
    if engine is None:
        from noisebrush.gui.engine_settings import EngineChoice

        choice = EngineChoice.load(settings)
        try:
            backend = choice.backend()
        except UserError as exc:  # a bad saved address: start on this computer and say why
            backend, note = None, f"Generating on this computer: {exc}"
        # leave a core for the GUI thread; previews at most at screen rate
        engine = Engine(backend, preview_interval_s=preview_interval_s, threads=default_threads(),
                        options=load_options(settings), warm_up=True)  # fmt: skip
        if backend is None:
            engine.preload(model)
    bridge = EngineBridge(engine)
    window = MainWindow(bridge, settings, data_dir or app_data_dir(), model, live_debounce_ms, restore)
    bridge.setParent(window)
    if note:
        window.show_error(note)
    return window


def log_file() -> Path:
    path = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppLocalDataLocation)
    return Path(path or Path.home() / ".noisebrush") / "logs" / "noisebrush.log"


def start_log(path: Path) -> None:
    """Errors of an app started from the menu have no terminal: log to a rotating file, and let a hard crash
    (a segfault in a native library) write its Python stack there too."""
    import faulthandler
    import logging
    from logging.handlers import RotatingFileHandler

    path.parent.mkdir(parents=True, exist_ok=True)
    handler = RotatingFileHandler(path, maxBytes=1_000_000, backupCount=3, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    global _crash_log  # kept open for faulthandler for the life of the process
    _crash_log = open(path.with_suffix(".crash.log"), "a", encoding="utf-8")  # noqa: SIM115
    faulthandler.enable(_crash_log)

    def excepthook(*exc) -> None:
        logging.getLogger("noisebrush").critical("uncaught exception", exc_info=exc)
        sys.__excepthook__(*exc)

    sys.excepthook = excepthook


_crash_log = None


def main(argv: list[str] | None = None, files: list[str] | None = None) -> int:
    app = QApplication(argv if argv is not None else sys.argv)
    app.setApplicationName(APP_NAME)
    app.setOrganizationName(APP_NAME)
    try:
        start_log(log_file())
    except OSError as exc:
        print(f"noisebrush: cannot write the log: {exc}", file=sys.stderr)
    app.setDesktopFileName("noisebrush")  # ties the window to noisebrush.desktop (Wayland uses this for the icon)
    window = create_main_window()
    window.show()
    if files:  # after the window shows: a PNG restores its settings, pose JSON becomes the pose layer
        window.open_files([str(Path(f).resolve()) for f in files])
    return app.exec()
