"""Side panels: generation settings, control layers, history strip."""

from __future__ import annotations

import random
from dataclasses import dataclass

from noisebrush.engine.schedulers import SCHEDULER_NAMES
from noisebrush.gui.document import LAYER_KINDS, LAYER_TITLES, Document
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QImage, QPixmap
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QSlider,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

MAX_SEED = 2**31 - 1


@dataclass
class PanelValues:
    """Everything the generation panel holds, as plain data (what QSettings saves)."""

    prompt: str = "a red circle on a blue background"
    negative: str = ""
    model: str = ""
    steps: int = 20
    guidance: float = 5.0
    seed: int = 0
    seed_locked: bool = False
    width: int = 128
    height: int = 128
    scheduler: str = "DPM++ 2M"
    live: bool = False


def _row(*widgets: QWidget) -> QHBoxLayout:
    """Widgets side by side, the first one stretching (a slider and its value label, a field and its buttons)."""
    row = QHBoxLayout()
    for i, w in enumerate(widgets):
        row.addWidget(w, 1 if i == 0 else 0)
    return row


def _slider(lo: int, hi: int, value: int) -> QSlider:
    s = QSlider(Qt.Orientation.Horizontal)
    s.setRange(lo, hi)
    s.setValue(value)
    return s


class GenerationPanel(QWidget):
    changed = Signal()  # any setting that changes the picture
    generate_requested = Signal()
    cancel_requested = Signal()
    live_toggled = Signal(bool)
    model_browse_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.prompt = QPlainTextEdit()
        self.prompt.setPlaceholderText("Describe the picture…")
        self.prompt.setFixedHeight(64)
        self.negative = QLineEdit()
        self.negative.setPlaceholderText("Negative prompt (optional)")
        self.model = QComboBox()
        self.model.addItem("Embedded default (128 px)", "")
        self.browse_model = QToolButton(text="…", toolTip="Choose a diffusers model folder")
        self.steps = _slider(1, 100, 20)
        self.steps_label = QLabel()
        self.guidance = _slider(0, 40, 10)  # half-steps: 0–20
        self.guidance_label = QLabel()
        self.seed = QSpinBox()
        self.seed.setRange(0, MAX_SEED)
        self.seed_lock = QCheckBox("Lock", toolTip="Keep this seed; unlocked, each Generate draws a new one")
        self.new_seed = QToolButton(text="New", toolTip="Draw a new random seed")
        self.width_box, self.height_box = QSpinBox(), QSpinBox()
        for box in (self.width_box, self.height_box):
            box.setRange(64, 2048)
            box.setSingleStep(8)
            box.setSuffix(" px")
        self.scheduler = QComboBox()
        self.scheduler.addItems(list(SCHEDULER_NAMES))
        self.generate_btn = QPushButton("Generate")
        self.generate_btn.setToolTip("Generate (Ctrl+Enter)")
        self.generate_btn.setDefault(True)
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setToolTip("Cancel (Esc)")
        self.cancel_btn.setEnabled(False)
        self.live = QCheckBox("Live")
        self.live.setToolTip("Regenerate after every stroke or change")
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("idle")
        self.progress_label = QLabel(" ")

        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.addRow("Model", _row(self.model, self.browse_model))
        form.addRow("Prompt", self.prompt)
        form.addRow("Negative", self.negative)
        form.addRow("Steps", _row(self.steps, self.steps_label))
        form.addRow("Guidance", _row(self.guidance, self.guidance_label))
        form.addRow("Seed", _row(self.seed, self.new_seed, self.seed_lock))
        size_row = QHBoxLayout()
        size_row.addWidget(self.width_box)
        size_row.addWidget(QLabel("×"))
        size_row.addWidget(self.height_box)
        form.addRow("Size", size_row)
        form.addRow("Sampler", self.scheduler)
        buttons = QHBoxLayout()
        buttons.addWidget(self.generate_btn, 2)
        buttons.addWidget(self.cancel_btn, 1)
        buttons.addWidget(self.live)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.progress_label)
        layout.addStretch(1)

        self.steps.valueChanged.connect(lambda v: self.steps_label.setText(f"{v:3d}"))
        self.guidance.valueChanged.connect(lambda v: self.guidance_label.setText(f"{v / 2:4.1f}"))
        for sig in (self.steps.valueChanged, self.guidance.valueChanged, self.seed.valueChanged, self.width_box.valueChanged,
                    self.height_box.valueChanged, self.scheduler.currentIndexChanged, self.model.currentIndexChanged,
                    self.prompt.textChanged, self.negative.textChanged):  # fmt: skip
            sig.connect(self.changed)
        self.new_seed.clicked.connect(lambda: self.seed.setValue(random.randint(0, MAX_SEED)))
        self.generate_btn.clicked.connect(self.generate_requested)
        self.cancel_btn.clicked.connect(self.cancel_requested)
        self.live.toggled.connect(self.live_toggled)
        self.browse_model.clicked.connect(self.model_browse_requested)
        self.set_values(PanelValues())

    def values(self) -> PanelValues:
        return PanelValues(
            prompt=self.prompt.toPlainText().strip(),
            negative=self.negative.text().strip(),
            model=self.model.currentData() or "",
            steps=self.steps.value(),
            guidance=self.guidance.value() / 2.0,
            seed=self.seed.value(),
            seed_locked=self.seed_lock.isChecked(),
            width=self.width_box.value() // 8 * 8,
            height=self.height_box.value() // 8 * 8,
            scheduler=self.scheduler.currentText(),
            live=self.live.isChecked(),
        )

    def set_values(self, v: PanelValues) -> None:
        if self.prompt.toPlainText() != v.prompt:
            self.prompt.setPlainText(v.prompt)
        self.negative.setText(v.negative)
        self.set_model(v.model)
        self.steps.setValue(max(1, min(100, v.steps)))
        self.guidance.setValue(int(round(max(0.0, min(20.0, v.guidance)) * 2)))
        self.seed.setValue(max(0, min(MAX_SEED, v.seed)))
        self.seed_lock.setChecked(v.seed_locked)
        self.width_box.setValue(v.width)
        self.height_box.setValue(v.height)
        idx = self.scheduler.findText(v.scheduler)
        self.scheduler.setCurrentIndex(max(0, idx))
        self.live.setChecked(v.live)
        self.steps_label.setText(f"{self.steps.value():3d}")
        self.guidance_label.setText(f"{self.guidance.value() / 2:4.1f}")

    def add_model(self, title: str, ref: str) -> None:
        if self.model.findData(ref) < 0:
            self.model.addItem(title, ref)

    def set_model(self, ref: str) -> None:
        idx = self.model.findData(ref)
        if idx < 0:
            from pathlib import Path

            self.model.addItem(Path(ref).name or ref, ref)
            idx = self.model.count() - 1
        self.model.setCurrentIndex(idx)

    def set_running(self, running: bool) -> None:
        self.cancel_btn.setEnabled(running)
        if not running:
            self.progress.setRange(0, 1)
            self.progress.setValue(0)
            self.progress.setFormat("idle")

    def show_progress(self, step: int, total: int, remaining_s: float | None) -> None:
        self.progress.setRange(0, total)
        self.progress.setValue(step)
        self.progress.setFormat(f"step {step}/{total}")
        self.progress_label.setText("" if remaining_s is None else f"about {remaining_s:.1f} s left")


class LayerBox(QGroupBox):
    """One control layer's settings: active, enabled, visible, opacity, weight, start–end."""

    changed = Signal()
    load_requested = Signal(str)
    clear_requested = Signal(str)

    def __init__(self, doc: Document, kind: str, group: QButtonGroup) -> None:
        super().__init__(LAYER_TITLES[kind])
        self.kind = kind
        self.layer = doc.layers[kind]
        s = self.layer.settings
        self.active = QRadioButton("Draw here" if kind != "pose" else "Edit here")
        group.addButton(self.active)
        self.enabled = QCheckBox("Use")
        self.enabled.setChecked(s.enabled)
        self.visible = QCheckBox("Show")
        self.visible.setChecked(s.visible)
        self.opacity = _slider(0, 100, int(s.opacity * 100))
        self.weight = _slider(0, 200, int(s.weight * 100))
        self.weight_label = QLabel(f"{s.weight:.2f}")
        self.start = _slider(0, 100, int(s.start * 100))
        self.end = _slider(0, 100, int(s.end * 100))
        self.range_label = QLabel()
        self.controlnet = QComboBox()
        self.controlnet.addItem("the model's own", "")
        self.controlnet.setToolTip("Which ControlNet turns this layer into guidance")
        load = QPushButton("Load…")
        clear = QPushButton("Clear")
        top = QHBoxLayout()
        for w in (self.active, self.enabled, self.visible):
            top.addWidget(w)
        top.addStretch(1)
        top.addWidget(load)
        top.addWidget(clear)
        form = QFormLayout()
        form.addRow("Opacity", self.opacity)
        form.addRow("Weight", _row(self.weight, self.weight_label))
        r_row = QHBoxLayout()
        r_row.addWidget(self.start)
        r_row.addWidget(self.end)
        r_row.addWidget(self.range_label)
        form.addRow("Start–end", r_row)
        form.addRow("ControlNet", self.controlnet)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addLayout(form)
        for sig in (self.enabled.toggled, self.visible.toggled, self.opacity.valueChanged, self.weight.valueChanged,
                    self.start.valueChanged, self.end.valueChanged, self.controlnet.currentIndexChanged):  # fmt: skip
            sig.connect(self._sync)
        load.clicked.connect(lambda: self.load_requested.emit(kind))
        clear.clicked.connect(lambda: self.clear_requested.emit(kind))
        self._sync()

    def add_controlnet(self, title: str, ref: str) -> None:
        if self.controlnet.findData(ref) < 0:
            self.controlnet.addItem(title, ref)

    def refresh(self) -> None:
        """Show the layer's settings after they were replaced (autosave restore)."""
        s = self.layer.settings
        if s.controlnet:
            self.add_controlnet(s.controlnet.rsplit("/", 1)[-1], s.controlnet)
        self.controlnet.blockSignals(True)
        self.controlnet.setCurrentIndex(max(0, self.controlnet.findData(s.controlnet)))
        self.controlnet.blockSignals(False)
        for w, v in ((self.enabled, s.enabled), (self.visible, s.visible)):
            w.blockSignals(True)
            w.setChecked(v)
            w.blockSignals(False)
        for w, v in ((self.opacity, s.opacity), (self.weight, s.weight), (self.start, s.start), (self.end, s.end)):
            w.blockSignals(True)
            w.setValue(int(round(v * 100)))
            w.blockSignals(False)
        self._sync()

    def _sync(self) -> None:
        if self.start.value() > self.end.value():
            sender = self.sender()
            (self.end if sender is self.start else self.start).setValue(
                (self.start if sender is self.start else self.end).value()
            )
        s = self.layer.settings
        s.enabled, s.visible = self.enabled.isChecked(), self.visible.isChecked()
        s.opacity = self.opacity.value() / 100
        s.weight = self.weight.value() / 100
        s.start, s.end = self.start.value() / 100, self.end.value() / 100
        s.controlnet = self.controlnet.currentData() or ""
        self.weight_label.setText(f"{s.weight:.2f}")
        self.range_label.setText(f"{self.start.value()}–{self.end.value()}%")
        self.layer.changed.emit()
        self.changed.emit()


class LayersPanel(QWidget):
    changed = Signal()
    active_changed = Signal(str)
    load_requested = Signal(str)
    clear_requested = Signal(str)

    def __init__(self, doc: Document, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.group = QButtonGroup(self)
        self.boxes: dict[str, LayerBox] = {}
        layout = QVBoxLayout(self)
        for kind in LAYER_KINDS:
            box = LayerBox(doc, kind, self.group)
            box.changed.connect(self.changed)
            box.load_requested.connect(self.load_requested)
            box.clear_requested.connect(self.clear_requested)
            box.active.toggled.connect(lambda on, k=kind: on and self.active_changed.emit(k))
            self.boxes[kind] = box
            layout.addWidget(box)
        layout.addStretch(1)
        self.boxes["scribble"].active.setChecked(True)

    def set_active(self, kind: str) -> None:
        self.boxes[kind].active.setChecked(True)


class HistoryStrip(QListWidget):
    """Thumbnails of finished results; each item keeps its image and request."""

    THUMB = 96

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setViewMode(QListWidget.ViewMode.IconMode)
        self.setFlow(QListWidget.Flow.LeftToRight)
        self.setWrapping(False)
        self.setIconSize(QSize(self.THUMB, self.THUMB))
        self.setFixedHeight(self.THUMB + 34)
        self.setMovement(QListWidget.Movement.Static)
        self.setHorizontalScrollMode(QListWidget.ScrollMode.ScrollPerPixel)

    def add_result(self, image: QImage, finished) -> QListWidgetItem:
        thumb = QPixmap.fromImage(image).scaled(self.THUMB, self.THUMB, Qt.AspectRatioMode.KeepAspectRatio,
                                                Qt.TransformationMode.SmoothTransformation)  # fmt: skip
        item = QListWidgetItem(QIcon(thumb), f"seed {finished.params.seed}")
        item.setData(Qt.ItemDataRole.UserRole, finished)
        item.setToolTip(finished.params.prompt)
        self.insertItem(0, item)
        self.setCurrentItem(item)
        return item
