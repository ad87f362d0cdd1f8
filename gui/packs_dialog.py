"""File → Get models…: the curated model packs (assets/model_packs.json) by checkbox, with what each costs in disk,
what is already installed, the free space and the licence; one click downloads them off the GUI thread with
progress per file and overall, speed and time left. Cancel deletes the file in flight; a cut resumes next time."""

from __future__ import annotations

import threading
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QVBoxLayout,
)

from noisebrush.engine.downloads import DownloadProgress, download_pack, hub_token, save_token
from noisebrush.engine.packs import Pack, free_bytes, load_packs, pack_state, size_text
from noisebrush.gui.tasks import Task


def _time(s: float | None) -> str:
    if s is None:
        return "…"
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.0f} min" if s < 5400 else f"{s / 3600:.1f} h"


class PacksDialog(QDialog):
    installed = Signal(str)  # the models-folder path of the pack's model to use, once the last pack is in
    progressed = Signal(object)  # DownloadProgress, from the worker

    def __init__(self, models: Path, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Get models")
        self.models = models
        self.packs: dict[str, Pack] = load_packs()
        self.task: Task | None = None
        self.cancelled = threading.Event()
        intro = QLabel("Pick the models to download. They go to your models folder and work offline afterwards; "
                       "files come from the Hugging Face Hub.")  # fmt: skip
        intro.setWordWrap(True)
        self.folder = QLabel()
        self.list = QListWidget()
        self.list.setMinimumSize(680, 250)
        self.list.setWordWrap(True)
        self.list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        for pack in self.packs.values():
            item = QListWidgetItem()
            item.setData(Qt.ItemDataRole.UserRole, pack.id)
            item.setToolTip(f"{pack.description}\nLicence: {pack.licence}")
            self.list.addItem(item)
        self.summary = QLabel()
        self.token = QLineEdit()
        self.token.setEchoMode(QLineEdit.EchoMode.Password)
        self.token.setPlaceholderText("Hugging Face token for gated packs (hf_…): kept in the Hub tools' token file")
        self.file_bar, self.total_bar = QProgressBar(), QProgressBar()
        for bar in (self.file_bar, self.total_bar):
            bar.setRange(0, 1000)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.start_btn = self.buttons.addButton("Download", QDialogButtonBox.ButtonRole.ActionRole)
        layout = QVBoxLayout(self)
        for w in (intro, self.folder, self.list, self.summary, self.token, self.file_bar, self.total_bar, self.status,
                  self.buttons):  # fmt: skip
            layout.addWidget(w)
        self.list.itemChanged.connect(lambda _item: self._update())
        self.start_btn.clicked.connect(self.start)
        self.buttons.rejected.connect(self.reject)
        self.progressed.connect(self.on_progress)
        self._refresh_rows()

    # --- the list ---------------------------------------------------------------------------
    def _refresh_rows(self) -> None:
        self.list.blockSignals(True)
        for i in range(self.list.count()):
            item = self.list.item(i)
            pack = self.packs[item.data(Qt.ItemDataRole.UserRole)]
            have, total = pack_state(pack, self.models)
            state = "installed" if have == total else f"{have} of {total} files here" if have else "not installed"
            gated = " · gated: needs your Hugging Face token" if pack.gated else ""
            licence = pack.licence.split(":")[0]  # the whole line is in the tooltip
            item.setText(f"{pack.title}\n    {size_text(pack.size)} · {state} · {licence}{gated}")
            done = have == total
            flags = Qt.ItemFlag.ItemIsEnabled | (Qt.ItemFlag.NoItemFlags if done else Qt.ItemFlag.ItemIsUserCheckable)
            item.setFlags(flags)
            item.setCheckState(Qt.CheckState.Checked if done else item.checkState())
        self.list.blockSignals(False)
        self._update()

    def chosen(self) -> list[Pack]:
        picked = []
        for i in range(self.list.count()):
            item = self.list.item(i)
            if item.flags() & Qt.ItemFlag.ItemIsUserCheckable and item.checkState() == Qt.CheckState.Checked:
                picked.append(self.packs[item.data(Qt.ItemDataRole.UserRole)])
        return picked

    def check(self, pack_id: str) -> None:
        for i in range(self.list.count()):
            if self.list.item(i).data(Qt.ItemDataRole.UserRole) == pack_id:
                self.list.item(i).setCheckState(Qt.CheckState.Checked)

    def _update(self) -> None:
        free = free_bytes(self.models)
        self.folder.setText(f"Models folder: {self.models} · {size_text(free)} free")
        picked = self.chosen()
        need = sum(p.size for p in picked)
        short = need > free
        self.summary.setText(f"{len(picked)} selected · {size_text(need)}" + (" · not enough free disk space" if short else "")
                             if picked else "Nothing selected")  # fmt: skip
        self.token.setVisible(any(p.gated for p in picked) and not hub_token())
        self.start_btn.setEnabled(self.task is not None or (bool(picked) and not short))

    # --- downloading ------------------------------------------------------------------------
    def start(self) -> None:
        if self.task is not None:  # the button reads "Cancel download" while one runs
            self.cancelled.set()
            self.status.setText("Cancelling…")
            return
        packs, models, token = self.chosen(), self.models, self.token.text().strip() or None
        self.cancelled.clear()
        self.start_btn.setText("Cancel download")
        self.list.setEnabled(False)
        self.status.setText("Starting…")

        def work() -> str:
            selected = ""
            for pack in packs:
                download_pack(pack, models, self.progressed.emit, self.cancelled, token)
                if token and pack.gated:
                    save_token(token)  # the Hub took it
                if pack.selected is not None and not selected:
                    selected = str(models / pack.selected.dest)
            return selected

        self.task = Task(work, parent=self)
        self.task.done.connect(self._finished)
        self.task.failed.connect(self._failed)
        self.task.start()
        self._update()

    def on_progress(self, p: DownloadProgress) -> None:
        self.file_bar.setValue(int(1000 * p.file_done / p.file_total) if p.file_total else 0)
        self.file_bar.setFormat(f"{p.file} · {size_text(p.file_done)} of {size_text(p.file_total)}")
        self.total_bar.setValue(int(1000 * p.done / p.total) if p.total else 0)
        self.total_bar.setFormat(f"file {p.index} of {p.files} · {size_text(p.done)} of {size_text(p.total)}")
        self.status.setText(f"{p.rate / 1e6:.1f} MB/s · about {_time(p.eta_s)} left")

    def _finished(self, selected: str) -> None:
        self.task = None
        self.start_btn.setText("Download")
        self.list.setEnabled(True)
        self._refresh_rows()
        self.file_bar.setValue(1000)
        self.total_bar.setValue(1000)
        self.status.setText("Done: the model is selected, and each layer uses its ControlNet." if selected else "Done.")
        if selected:
            self.installed.emit(selected)

    def _failed(self, message: str) -> None:
        self.task = None
        self.start_btn.setText("Download")
        self.list.setEnabled(True)
        self._refresh_rows()
        self.status.setText(message)
        for bar in (self.file_bar, self.total_bar):  # a cut file's kept part is counted again when it resumes
            bar.setValue(0)
            bar.resetFormat()
        if "token" in message and self.chosen() and any(p.gated for p in self.chosen()):
            self.token.setVisible(True)
            self.token.setFocus()

    def reject(self) -> None:
        if self.task is not None:  # the file in flight is deleted; finished files stay
            self.cancelled.set()
            self.task.join(30)
        super().reject()
