"""'Make control from image…': run a preprocessor on a photo, preview the map, then use it as a layer."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
)

from noisebrush.engine.errors import UserError
from noisebrush.engine.images import read_image
from noisebrush.engine.pose import Person
from noisebrush.engine.preprocess import (
    PREPROCESSORS,
    PreprocessResult,
    download_weights,
    fit_aspect,
    missing_weights,
    run_preprocessor,
)
from noisebrush.gui.engine_bridge import to_qimage
from noisebrush.gui.tasks import Task


class PreprocessDialog(QDialog):
    """Emits `accepted_map(kind, image, people)` when the person chooses to use the result."""

    accepted_map = Signal(str, object, object)

    def __init__(self, parent, width: int, height: int, cache_dir: str | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Make control from image")
        self.width_, self.height_ = width, height
        self.cache_dir = cache_dir
        self.source: np.ndarray | None = None
        self.result: tuple[np.ndarray, list[Person] | None] | None = None
        self.task: Task | None = None

        self.file_label = QLabel("No image chosen")
        choose = QPushButton("Choose image…")
        self.kind = QComboBox()
        for p in PREPROCESSORS.values():
            self.kind.addItem(p.title, p.name)
        self.fit = QComboBox()
        self.fit.addItem("Letterbox (keep all of it)", "letterbox")
        self.fit.addItem("Crop (fill the canvas)", "crop")
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.preview = QLabel()
        self.preview.setFixedSize(256, 256)
        self.preview.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.preview.setStyleSheet("background: #222; color: #aaa")
        self.preview.setText("preview")
        self.progress = QProgressBar()
        self.progress.hide()
        self.run_btn = QPushButton("Make map")
        self.download_btn = QPushButton("Download weights")
        self.download_btn.hide()
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.use_btn = self.buttons.addButton("Use as layer", QDialogButtonBox.ButtonRole.AcceptRole)
        self.use_btn.setEnabled(False)

        form = QFormLayout()
        row = QHBoxLayout()
        row.addWidget(self.file_label, 1)
        row.addWidget(choose)
        form.addRow("Image", row)
        form.addRow("Make", self.kind)
        form.addRow("Fit", self.fit)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.preview, 0, Qt.AlignmentFlag.AlignHCenter)
        layout.addWidget(self.status)
        layout.addWidget(self.progress)
        row2 = QHBoxLayout()
        row2.addWidget(self.run_btn)
        row2.addWidget(self.download_btn)
        layout.addLayout(row2)
        layout.addWidget(self.buttons)

        choose.clicked.connect(self.choose_image)
        self.kind.currentIndexChanged.connect(self._check_weights)
        self.fit.currentIndexChanged.connect(self._clear_result)
        self.run_btn.clicked.connect(self.run)
        self.download_btn.clicked.connect(self.download)
        self.buttons.rejected.connect(self.reject)
        self.use_btn.clicked.connect(self._use)
        self._check_weights()

    def choose_image(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Image to make a control map from", "", "Images (*.png *.jpg *.jpeg *.webp *.bmp)"
        )
        if path:
            self.set_image(path)

    def set_image(self, path: str) -> bool:
        try:
            self.source = read_image(path).image
        except UserError as exc:
            self.status.setText(str(exc))
            return False
        self.file_label.setText(Path(path).name)
        self._clear_result()
        return True

    def _clear_result(self) -> None:
        self.result = None
        self.use_btn.setEnabled(False)

    def _check_weights(self) -> None:
        self._clear_result()
        pre = PREPROCESSORS[self.kind.currentData()]
        missing = missing_weights(pre, self.cache_dir)
        if missing:
            mb = sum(w.size_mb for w in missing)
            self.status.setText(
                f"Needs {missing[0].repo}: {', '.join(w.filename for w in missing)} ({mb:.0f} MB), not on this computer."
            )
            self.download_btn.setText(f"Download {mb:.0f} MB")
            self.download_btn.show()
        else:
            self.status.setText("Weights: none needed" if not pre.weights else "Weights: found in the local cache")
            self.download_btn.hide()

    def run(self) -> None:
        if self.source is None:
            self.status.setText("Choose an image first.")
            return
        name, mode = self.kind.currentData(), self.fit.currentData()
        source, w, h, cache = self.source, self.width_, self.height_, self.cache_dir

        def work() -> tuple[np.ndarray, list[Person] | None]:
            fitted, (scale, dx, dy) = fit_aspect(source, w, h, mode)
            res: PreprocessResult = run_preprocessor(name, fitted, cache_dir=cache)
            return res.image, res.people

        self.run_btn.setEnabled(False)
        self.status.setText("Working…")
        self.task = Task(work, parent=self)
        self.task.done.connect(self._on_result)
        self.task.failed.connect(self._on_failed)
        self.task.start()

    def _on_result(self, result) -> None:
        self.run_btn.setEnabled(True)
        self.result = result
        image, people = result
        pix = QPixmap.fromImage(to_qimage(image)).scaled(
            256, 256, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation
        )
        self.preview.setPixmap(pix)
        extra = f", {len(people)} person(s) found — editable after use" if people is not None else ""
        self.status.setText(f"Preview of the {PREPROCESSORS[self.kind.currentData()].kind} map{extra}.")
        self.use_btn.setEnabled(True)

    def _on_failed(self, message: str) -> None:
        self.run_btn.setEnabled(True)
        self.status.setText(message)
        self._check_weights() if "weights" in message else None

    def download(self) -> None:
        pre = PREPROCESSORS[self.kind.currentData()]
        cache = self.cache_dir
        self.progress.show()
        self.progress.setRange(0, 1000)
        self.download_btn.setEnabled(False)
        started = time.perf_counter()

        def work(progress, cancelled):
            download_weights(pre, progress, cancelled, cache)

        def on_progress(done: int, total: int) -> None:
            rate = done / max(1e-6, time.perf_counter() - started)
            self.progress.setValue(int(1000 * done / max(1, total)))
            self.progress.setFormat(f"{done / 1e6:.1f} / {total / 1e6:.0f} MB · {rate / 1e6:.1f} MB/s")

        self.task = Task(work, with_progress=True, parent=self)
        self.task.progressed.connect(on_progress)
        self.task.done.connect(lambda _r: (self.progress.hide(), self.download_btn.setEnabled(True), self._check_weights()))
        self.task.failed.connect(
            lambda m: (self.progress.hide(), self.download_btn.setEnabled(True), self.status.setText(f"Download failed: {m}"))
        )
        self.task.start()

    def _use(self) -> None:
        if self.result is None:
            return
        image, people = self.result
        self.accepted_map.emit(PREPROCESSORS[self.kind.currentData()].kind, image, people)
        self.accept()

    def reject(self) -> None:
        if self.task is not None:
            self.task.cancel()
        super().reject()

    def done(self, r: int) -> None:  # noqa: D401 - Qt override
        if self.task is not None:
            self.task.join(30)
        super().done(r)
