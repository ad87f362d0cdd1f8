"""Download a model from the Hugging Face Hub into the standard cache: first what and how much (the files the
pipeline reads, one precision), then bytes, rate and cancel."""

from __future__ import annotations

import time
from collections.abc import Callable

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QLabel, QLineEdit, QProgressBar, QPushButton, QVBoxLayout

from noisebrush.engine.sources import DownloadPlan, download_snapshot, hub_file_sizes, is_hub_id, plan_download
from noisebrush.gui.tasks import Task


class DownloadDialog(QDialog):
    downloaded = Signal(str)  # the Hub id, once it is in the cache

    def __init__(self, parent=None, repo: str = "", fetch: Callable[..., str] | None = None,
                 list_files: Callable[[str], dict[str, int]] | None = None,
                 planner: Callable[[dict[str, int]], DownloadPlan] = plan_download) -> None:  # fmt: skip
        """planner: which of the repo's files to get (a pipeline's, or just an IP-Adapter's)."""
        super().__init__(parent)
        self.planner = planner
        self.setWindowTitle("Download a model")
        self.fetch = fetch
        self.list_files = list_files or hub_file_sizes
        self.plan: DownloadPlan | None = None
        self.task: Task | None = None
        self.repo = QLineEdit(repo)
        self.repo.setPlaceholderText("owner/name, e.g. a Stable Diffusion 1.5 model on the Hugging Face Hub")
        self.info = QLabel("Files go to the standard Hugging Face cache; an interrupted download resumes.")
        self.info.setWordWrap(True)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setFormat("not started")
        self.start_btn = QPushButton("Check size")
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        layout = QVBoxLayout(self)
        for w in (self.repo, self.info, self.bar, self.start_btn, self.buttons):
            layout.addWidget(w)
        self.start_btn.clicked.connect(self.start)
        self.buttons.rejected.connect(self.reject)
        self._t0 = 0.0

    def start(self) -> None:
        """First press: list the repo and show what would come, and how big. Second press: download that."""
        repo = self.repo.text().strip()
        if not is_hub_id(repo):
            self.info.setText(f"'{repo}' is not a Hugging Face id (owner/name).")
            return
        self.start_btn.setEnabled(False)
        if self.plan is None:
            self.info.setText(f"Looking up {repo}…")
            list_files, planner = self.list_files, self.planner
            self.task = Task(lambda: planner(list_files(repo)), parent=self)
            self.task.done.connect(self._planned)
            self.task.failed.connect(self._failed)
            self.task.start()
            return
        self._t0 = time.perf_counter()
        fetch, plan = self.fetch, self.plan
        self.task = Task(
            lambda progress, cancelled: download_snapshot(repo, progress, cancelled, fetch=fetch, plan=plan),
            with_progress=True, parent=self,
        )  # fmt: skip
        self.task.progressed.connect(self.on_progress)
        self.task.done.connect(lambda _path: self._finished(repo))
        self.task.failed.connect(self._failed)
        self.task.start()

    def _planned(self, plan: DownloadPlan) -> None:
        self.plan = plan
        self.repo.setReadOnly(True)
        left_out = plan.skipped_bytes / 1e9
        skipped = f" ({left_out:.1f} GB of other precisions and checkpoints left out)" if plan.skipped_bytes else ""
        self.info.setText(f"{len(plan.files)} files, {plan.total_bytes / 1e9:.2f} GB{skipped}.")
        self.start_btn.setText(f"Download {plan.total_bytes / 1e9:.2f} GB")
        self.start_btn.setEnabled(True)

    def on_progress(self, done: int, total: int) -> None:
        rate = done / max(1e-6, time.perf_counter() - self._t0)
        self.bar.setValue(int(1000 * done / total) if total else 0)
        self.bar.setFormat(f"{done / 1e6:.1f} / {total / 1e6:.1f} MB · {rate / 1e6:.1f} MB/s")

    def _finished(self, repo: str) -> None:
        self.bar.setValue(1000)
        self.info.setText(f"{repo} is ready.")
        self.downloaded.emit(repo)
        self.accept()

    def _failed(self, message: str) -> None:
        self.start_btn.setEnabled(True)
        self.info.setText(message)

    def reject(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task.join(30)
        super().reject()
