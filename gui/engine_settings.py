"""Settings → Engine: run on this computer or on ComfyUI servers. The choice persists and applies at once.

The GUI never learns which backend runs a job: it swaps the bridge's engine and rescans the models; the jobs,
previews and history work the same on either.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from PySide6.QtCore import QObject, QSettings, Qt, Signal
from PySide6.QtWidgets import (
    QButtonGroup,
    QDialog,
    QDialogButtonBox,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)

from noisebrush.engine.backends.base import Backend
from noisebrush.engine.backends.comfy_client import ServerConfig
from noisebrush.engine.backends.server_trust import origin_text, shown_fingerprint
from noisebrush.engine.credentials import SecretStore
from noisebrush.engine.errors import UserError
from noisebrush.gui.tasks import Task
from noisebrush.gui.widgets import row

SERVER_DEFAULTS = {"width": 512, "height": 512, "steps": 20, "guidance": 7.0, "scheduler": "DPM++ 2M"}  # SD1.5's


TOKEN_KEY = "comfyui-token"


def secret_store(settings: QSettings) -> SecretStore:
    """The keyring, or a file only the user can read beside the settings file (never the settings file itself)."""
    return SecretStore(Path(settings.fileName()).with_name("secrets.json"))


@dataclass(frozen=True)
class EngineChoice:
    on_servers: bool = False
    urls: tuple[str, ...] = ()
    token: str = field(default="", repr=False)  # kept in the secret store, never in QSettings
    pins: tuple[tuple[str, str], ...] = ()  # (origin, SHA-256) of self-signed certificates the person trusted

    @classmethod
    def load(cls, settings: QSettings) -> EngineChoice:
        urls = str(settings.value("engine/servers", "") or "")
        store = secret_store(settings)
        legacy = str(settings.value("engine/token", "") or "")
        if legacy:  # versions before 0.x kept it in clear text in the settings: move it
            store.set(TOKEN_KEY, legacy)
            settings.remove("engine/token")
            settings.sync()
        try:
            pins = json.loads(str(settings.value("engine/pins", "{}") or "{}"))
        except ValueError:
            pins = {}
        pins = tuple(sorted((str(k), str(v)) for k, v in pins.items())) if isinstance(pins, dict) else ()
        return cls(settings.value("engine/on_servers", False, type=bool),
                   tuple(u for u in urls.split() if u), store.get(TOKEN_KEY), pins)  # fmt: skip

    def save(self, settings: QSettings) -> None:
        settings.setValue("engine/on_servers", self.on_servers)
        settings.setValue("engine/servers", "\n".join(self.urls))
        settings.setValue("engine/pins", json.dumps(dict(self.pins)))
        secret_store(settings).set(TOKEN_KEY, self.token)

    def pinned(self, server_origin: str, fingerprint: str) -> EngineChoice:
        """The same choice trusting one more self-signed certificate (replacing the old pin of that origin)."""
        pins = dict(self.pins)
        pins[server_origin] = fingerprint
        return EngineChoice(self.on_servers, self.urls, self.token, tuple(sorted(pins.items())))

    def configs(self) -> list[ServerConfig]:
        """The servers, checked; UserError naming the first bad address."""
        if not self.urls:
            raise UserError("add at least one ComfyUI server address, e.g. http://127.0.0.1:8188")
        pins = dict(self.pins)
        return [ServerConfig(u, self.token, pins.get(origin_text(u), "")) for u in self.urls]

    def backend(self) -> Backend | None:
        """A ComfyUI backend for the servers; None for this computer (the engine's default local backend)."""
        if not self.on_servers:
            return None
        from noisebrush.engine.backends.comfy import ComfyBackend

        return ComfyBackend(self.configs())


class EngineDialog(QDialog):
    """Where generation runs. Test asks each server for its version, device, free memory and models (on a worker)."""

    chosen = Signal(object)  # EngineChoice

    def __init__(self, choice: EngineChoice, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Engine")
        self.local = QRadioButton("This computer")
        self.servers = QRadioButton("ComfyUI servers (one address per line; each job goes to the one that is free)")
        group = QButtonGroup(self)
        group.addButton(self.local)
        group.addButton(self.servers)
        (self.servers if choice.on_servers else self.local).setChecked(True)
        self.urls = QPlainTextEdit("\n".join(choice.urls))
        self.urls.setPlaceholderText("http://127.0.0.1:8188\nhttps://my-rented-gpu.example.com")
        self.urls.setMaximumHeight(90)
        self.token = QLineEdit(choice.token)
        self.token.setEchoMode(QLineEdit.EchoMode.Password)
        self.token.setPlaceholderText("optional: a token for servers behind an authenticating proxy")
        self.token.setToolTip("Sent only to these servers' own addresses, never through a redirect elsewhere; kept in "
                              "the system keyring, or where there is none in a file only you can read")  # fmt: skip
        self.test_button = QPushButton("Test")
        self.test_button.clicked.connect(self.test)
        self._pins = dict(choice.pins)
        self._untrusted: tuple[str, str] | None = None  # (origin, fingerprint) the Trust button would pin
        self.trust_button = QPushButton("")
        self.trust_button.setVisible(False)
        self.trust_button.clicked.connect(self.trust_certificate)
        self.report = QLabel("")
        self.report.setWordWrap(True)
        self.report.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        for w in (self.local, self.servers, self.urls):
            lay.addWidget(w)
        lay.addLayout(row(self.token, self.test_button))
        lay.addWidget(self.report)
        lay.addWidget(self.trust_button)
        lay.addWidget(buttons)
        self.servers.toggled.connect(self._enable)
        self._enable(self.servers.isChecked())
        self._test: Task | None = None
        self.resize(560, 0)

    def _enable(self, on: bool) -> None:
        for w in (self.urls, self.token, self.test_button):
            w.setEnabled(on)

    def choice(self) -> EngineChoice:
        return EngineChoice(self.servers.isChecked(), tuple(self.urls.toPlainText().split()), self.token.text().strip(),
                            tuple(sorted(self._pins.items())))  # fmt: skip

    def test(self) -> Task | None:
        from noisebrush.engine.backends.comfy import ComfyBackend

        try:
            backend = ComfyBackend(self.choice().configs(), timeout_s=5)
        except UserError as exc:
            self.report.setText(f"✗ {exc}")
            return None
        self.report.setText("Asking the servers…")
        self.test_button.setEnabled(False)
        self.trust_button.setVisible(False)
        task = self._test = Task(lambda: (backend.server_info(), dict(backend.untrusted_certificates)), parent=self)
        task.done.connect(self._tested)
        task.failed.connect(lambda msg: self.report.setText(f"✗ {msg}"))
        task.done.connect(lambda _: self.test_button.setEnabled(True))
        task.failed.connect(lambda _: self.test_button.setEnabled(True))
        return task.start()

    def _tested(self, answer: tuple[list[str], dict[str, str]]) -> None:
        lines, untrusted = answer
        self.report.setText("\n".join(lines))
        self._untrusted = next(iter(untrusted.items()), None)
        if self._untrusted is not None:
            server, fingerprint = self._untrusted
            self.trust_button.setText(f"Trust {server}'s certificate (SHA-256 {shown_fingerprint(fingerprint)[:23]}…)")
            self.trust_button.setToolTip("Compare the whole fingerprint above with the one your server shows first: "
                                         "only this certificate is trusted, and only for this address")  # fmt: skip
        self.trust_button.setVisible(self._untrusted is not None)
        self.adjustSize()  # several servers' lines: grow rather than cut the last ones off

    def trust_certificate(self) -> Task | None:
        """Pin the certificate the last Test saw, then test again with it."""
        if self._untrusted is None:
            return None
        server, fingerprint = self._untrusted
        self._pins[server] = fingerprint
        self._untrusted = None
        return self.test()

    def accept(self) -> None:
        choice = self.choice()
        if choice.on_servers:
            try:
                choice.configs()
            except UserError as exc:
                self.report.setText(f"✗ {exc}")
                return  # the dialog stays open with what was typed
        self.chosen.emit(choice)
        super().accept()

    def done(self, result: int) -> None:
        if self._test is not None:
            self._test.join(6)  # its timeouts are 5 s
        super().done(result)


class EngineSwitcher(QObject):
    """Applies an EngineChoice: a new engine behind the same bridge, the old one shut down on a worker, the models
    rescanned, and a model the new engine has put in the settings."""

    status = Signal(str, int)
    error = Signal(str)

    def __init__(self, state, bridge, files, settings: QSettings, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.state, self.bridge, self.files, self.settings = state, bridge, files, settings
        self._retiring: list[Task] = []
        files.models_scanned.connect(lambda: self._pick_model(EngineChoice.load(settings), state.models))

    def apply(self, choice: EngineChoice) -> None:
        from noisebrush.engine.device import default_threads
        from noisebrush.engine.engine import Engine
        from noisebrush.gui.app import load_options

        try:
            backend = choice.backend()
        except UserError as exc:
            self.error.emit(str(exc))
            return
        engine = Engine(backend, threads=default_threads(), options=load_options(self.settings), warm_up=True)
        old = self.bridge.switch_engine(engine)
        retire = Task(lambda: self.bridge.retire(old), parent=self)
        self._retiring.append(retire.start())
        was_on_servers = EngineChoice.load(self.settings).on_servers
        choice.save(self.settings)
        if was_on_servers and not choice.on_servers:
            self.files.use_model("")  # a server's checkpoint name means nothing here
        self.files.refresh_models()  # on servers, its models_scanned picks a model they have
        where = ", ".join(c.name for c in choice.configs()) if choice.on_servers else "this computer"
        self.status.emit(f"Generating on {where}", 8000)

    def _pick_model(self, choice: EngineChoice, models) -> None:
        """After every scan on servers: a model they have (at start the settings may still name a local one)."""
        if not choice.on_servers:
            return
        bases = [m.ref for m in models if m.role == "base"]
        if self.state.settings.model in bases:
            return
        if bases:
            self.state.update(model=bases[0], **SERVER_DEFAULTS)
        else:
            self.error.emit("The servers have no checkpoints (or do not answer): Settings → Engine → Test says more")

    def close(self) -> None:
        for task in self._retiring:
            task.join(30)
