"""The Generate panel and the history strip, bound to the state model."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QImage, QPixmap
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from noisebrush.engine.events import Finished
from noisebrush.engine.request import MAX_SEED
from noisebrush.engine.schedulers import SCHEDULER_NAMES
from noisebrush.gui.engine_bridge import to_qimage
from noisebrush.gui.lora_panel import LoraList
from noisebrush.gui.state import HISTORY_LIMIT, AppState, GenerationSettings
from noisebrush.gui.widgets import row, slider

MODES = (
    ("Generate", "generate", "A new picture from the prompt and the control layers"),
    ("Refine", "refine", "Repaint the Image layer's picture: Strength says how much"),
    ("Inpaint", "inpaint", "Repaint only where the Mask layer is painted; the rest stays exactly"),
    ("Extend", "extend", "Widen the Image layer's picture and paint the new border"),
)

GUIDANCE_TITLES = {  # a model's kind of guidance (ModelDefaults.guidance_kind): the row's title and tooltip
    "cfg": ("CFG", "Classifier-free guidance: how closely the picture follows the prompt (each step runs twice)"),
    "distilled": ("Guidance (distilled)", "Flux dev's guidance is an input the model was distilled with, not CFG: "
                  "about 3.5 is usual, and it costs nothing"),
    "none": ("Guidance (unused)", "This model (Flux schnell) ignores guidance"),
}  # fmt: skip


class SeedBox(QDoubleSpinBox):
    """A whole-number box for the full seed range, 0 to 2³²−1: QSpinBox stops at 2³¹−1, and a restored seed
    above that would be clamped silently."""

    def __init__(self) -> None:
        super().__init__()
        self.setDecimals(0)
        self.setRange(0, MAX_SEED)

    def value(self) -> int:  # type: ignore[override]
        return int(super().value())


class GenerationPanel(QWidget):
    """The generation settings, bound both ways to AppState.settings."""

    generate_requested = Signal()
    cancel_requested = Signal()
    model_browse_requested = Signal(str)  # "file" or "folder"

    def __init__(self, state: AppState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self._showing = False  # True while widgets are set from the model: their signals are no edits
        self._labelled_for: str | None = None  # the model the guidance and Live labels were last set for
        self.prompt = QPlainTextEdit()
        self.prompt.setPlaceholderText("Describe the picture…")
        self.prompt.setFixedHeight(52)
        self.negative = QLineEdit()
        self.negative.setPlaceholderText("Negative prompt (optional)")
        self.model = QComboBox()
        self.browse_model = QToolButton(text="…", toolTip="Choose a checkpoint file or a diffusers folder")
        self.browse_model.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        browse = QMenu(self.browse_model)
        browse.addAction("Checkpoint file (.safetensors, .gguf)…", lambda: self.model_browse_requested.emit("file"))
        browse.addAction("Diffusers folder…", lambda: self.model_browse_requested.emit("folder"))
        self.browse_model.setMenu(browse)
        self.steps = slider(1, 100, 20)
        self.steps_label = QLabel()
        self.guidance = slider(0, 40, 10)  # half-steps: 0–20
        self.guidance_label = QLabel()
        self.seed = SeedBox()
        self.seed_lock = QCheckBox("Lock", toolTip="Keep this seed; unlocked, each Generate draws a new one")
        self.new_seed = QToolButton(text="New", toolTip="Draw a new random seed")
        self.width_box, self.height_box = QSpinBox(), QSpinBox()
        for box in (self.width_box, self.height_box):
            box.setRange(64, 2048)
            box.setSingleStep(8)
            box.setSuffix(" px")
        self.scheduler = QComboBox()
        self.generate_btn = QPushButton("Generate")
        self.generate_btn.setToolTip("Generate (Ctrl+Enter)")
        self.generate_btn.setDefault(True)
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setToolTip("Cancel (Esc)")
        self.cancel_btn.setEnabled(False)
        self.mode = QComboBox()
        for title, mode, tip in MODES:
            self.mode.addItem(title, mode)
            self.mode.setItemData(self.mode.count() - 1, tip, Qt.ItemDataRole.ToolTipRole)
        self.strength = slider(1, 100, 50)
        self.strength_label = QLabel()
        self.feather = QSpinBox(suffix=" px", maximum=256, toolTip="Soft edge around the mask")
        self.extend_px = QSpinBox(suffix=" px", minimum=8, maximum=512, singleStep=8)
        self.extend_sides = {side: QCheckBox(name) for side, name in zip("ltrb", ("Left", "Top", "Right", "Bottom"))}
        self.mode_rows = {  # which rows each mode shows
            "strength": row(self.strength, self.strength_label),
            "feather": row(self.feather),
            "extend": row(self.extend_px, *self.extend_sides.values()),
        }
        self.live = QCheckBox("Live")
        self.live.setToolTip("Regenerate after every stroke or change")
        self.progress = QProgressBar()
        self.set_running(False)

        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.addRow("Model", row(self.model, self.browse_model))
        form.addRow("Prompt", self.prompt)
        form.addRow("Negative", self.negative)
        form.addRow("Steps", row(self.steps, self.steps_label))
        self.guidance_row = row(self.guidance, self.guidance_label)
        form.addRow("Guidance", self.guidance_row)
        form.addRow("Seed", row(self.seed, self.new_seed, self.seed_lock))
        form.addRow("Size", row(self.width_box, QLabel("×"), self.height_box))
        form.addRow("Sampler", self.scheduler)
        self.loras = LoraList(state)
        form.addRow("LoRAs", self.loras)
        form.addRow("Mode", self.mode)
        self._form = form
        for name, layout in self.mode_rows.items():
            form.addRow({"strength": "Strength", "feather": "Feather", "extend": "Extend"}[name], layout)
        buttons = QHBoxLayout()
        buttons.addWidget(self.generate_btn, 2)
        buttons.addWidget(self.cancel_btn, 1)
        buttons.addWidget(self.live)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)

        edits = {
            "prompt": (self.prompt.textChanged, lambda: self.prompt.toPlainText().strip()),
            "negative": (self.negative.textChanged, lambda: self.negative.text().strip()),
            "model": (self.model.activated, lambda: self.model.currentData() or ""),
            "steps": (self.steps.valueChanged, self.steps.value),
            "guidance": (self.guidance.valueChanged, lambda: self.guidance.value() / 2.0),
            "seed": (self.seed.valueChanged, self.seed.value),
            "seed_locked": (self.seed_lock.toggled, self.seed_lock.isChecked),
            "width": (self.width_box.valueChanged, self.width_box.value),
            "height": (self.height_box.valueChanged, self.height_box.value),
            "scheduler": (self.scheduler.currentIndexChanged, self.scheduler.currentText),
            "live": (self.live.toggled, self.live.isChecked),
            "mode": (self.mode.currentIndexChanged, lambda: self.mode.currentData()),
            "strength": (self.strength.valueChanged, lambda: self.strength.value() / 100),
            "feather": (self.feather.valueChanged, self.feather.value),
            "extend_px": (self.extend_px.valueChanged, self.extend_px.value),
            **{f"extend_sides_{k}": (box.toggled, self._sides) for k, box in self.extend_sides.items()},
        }
        for name, (signal, read) in edits.items():
            field = "extend_sides" if name.startswith("extend_sides") else name
            signal.connect(lambda *_a, n=field, r=read: self._edited(n, r()))
        self.new_seed.clicked.connect(lambda: state.new_seed())
        self.generate_btn.clicked.connect(self.generate_requested)
        self.cancel_btn.clicked.connect(self.cancel_requested)
        state.settings_changed.connect(lambda _names, _origin: self.show_settings())
        state.models_changed.connect(self._offer_models)
        self._offer_models()
        self.show_settings()

    def _edited(self, name: str, value: object) -> None:
        if not self._showing:
            self.state.update(**{name: value})

    def values(self) -> GenerationSettings:
        return self.state.settings

    def show_settings(self) -> None:
        """Show the model's settings; the widgets' own signals are not edits meanwhile."""
        v = self.state.settings
        self._showing = True
        try:
            if self.prompt.toPlainText().strip() != v.prompt:
                self.prompt.setPlainText(v.prompt)
            if self.negative.text().strip() != v.negative:
                self.negative.setText(v.negative)
            self.set_model(v.model)
            self.steps.setValue(max(1, min(100, v.steps)))
            self.guidance.setValue(int(round(max(0.0, min(20.0, v.guidance)) * 2)))
            self.seed.setValue(max(0, min(MAX_SEED, v.seed)))
            self.seed_lock.setChecked(v.seed_locked)
            self.width_box.setValue(v.width)
            self.height_box.setValue(v.height)
            self._offer_samplers(v)
            self.scheduler.setCurrentIndex(max(0, self.scheduler.findText(v.scheduler)))
            self.live.setChecked(v.live)
            self.mode.setCurrentIndex(max(0, self.mode.findData(v.mode)))
            self.strength.setValue(round(v.strength * 100))
            self.feather.setValue(v.feather)
            self.extend_px.setValue(v.extend_px)
            for side, box in self.extend_sides.items():
                box.setChecked(side in v.extend_sides)
        finally:
            self._showing = False
        self.steps_label.setText(f"{self.steps.value():3d}")
        self.guidance_label.setText(f"{self.guidance.value() / 2:4.1f}")
        self.strength_label.setText(f"{v.strength:.2f}")
        shown = {"refine": {"strength"}, "inpaint": {"strength", "feather"}, "extend": {"extend"}}.get(v.mode, set())
        for name, layout in self.mode_rows.items():
            self._form.setRowVisible(layout, name in shown)

    def _sides(self) -> str:
        return "".join(side for side, box in self.extend_sides.items() if box.isChecked())

    def _offer_samplers(self, v: GenerationSettings) -> None:
        """LCM only for models trained for it (elsewhere it gives a wash of colour), or when a file asks for it."""
        d = self.state.model_defaults()
        if self._labelled_for != v.model:
            self._labelled_for = v.model
            self._label_guidance(d.guidance_kind)
            self._label_live()
        lcm = v.scheduler == "LCM" or d.scheduler == "LCM"
        names = [n for n in SCHEDULER_NAMES if n != "LCM" or lcm]
        if names != [self.scheduler.itemText(i) for i in range(self.scheduler.count())]:
            self.scheduler.clear()
            self.scheduler.addItems(names)
        self.scheduler.setToolTip("" if lcm else "LCM is offered for LCM-trained models")

    def _label_live(self) -> None:
        """Say what live frames run (AppState.capture_request): the model's few-step path, an accelerator LoRA from
        the models folder, or all the Steps slider's steps (and that an accelerator would make them fast)."""
        tip = "Regenerate after every stroke or change"
        few, accel = self.state.model_defaults().few_step, self.state.live_accelerator()
        if few is not None:
            how = few.scheduler + (", no CFG" if few.guidance <= 1 else "")
            self.live.setText(f"Live ({few.steps} steps)")
            self.live.setToolTip(f"{tip}, in {few.steps} steps on this model's few-step path ({how}); "
                                 "Generate uses the Steps slider")  # fmt: skip
        elif accel is not None:
            lora, how = accel
            self.live.setText(f"Live · {how.describe()}")
            self.live.setToolTip(f"{tip}, in {how.steps} steps with the {how.name} LoRA ({Path(lora).name}, {how.scheduler}, "
                                 f"CFG {how.guidance:g}); Generate keeps your steps, CFG and sampler without it")  # fmt: skip
        elif self.state.accelerable_model() is not None:
            self.live.setText("Live")
            self.live.setToolTip(f"{tip}. Each frame runs all the steps: an accelerator LoRA (Hyper-SD, LCM-LoRA) in the "
                                 "models folder makes live frames several times faster; File → Get models… has one")  # fmt: skip
        else:
            self.live.setText("Live")
            self.live.setToolTip(tip)

    def _label_guidance(self, kind: str) -> None:
        """Flux dev's guidance is distilled into the model (an input, not CFG); Flux schnell ignores it."""
        title, tip = GUIDANCE_TITLES.get(kind, GUIDANCE_TITLES["cfg"])
        label = self._form.labelForField(self.guidance_row)
        if label is not None:
            label.setText(title)
        self.guidance.setToolTip(tip)

    def _offer_models(self) -> None:
        self._label_live()  # an accelerator LoRA may have come (or gone) with the models
        for m in self.state.models:
            if m.role == "base":
                idx = self.model.findData(m.ref)
                self.model.addItem(m.title, m.ref) if idx < 0 else self.model.setItemText(idx, m.title)

    def set_model(self, ref: str) -> None:
        idx = self.model.findData(ref)
        if idx < 0:
            self.model.addItem("Embedded default (128 px)" if not ref else Path(ref).name or ref, ref)
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
        left = "" if remaining_s is None else f" · about {remaining_s:.1f} s left"
        self.progress.setFormat(f"step {step}/{total}{left}")


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

    def bind(self, state: AppState) -> None:
        """New results appear first; a click restores that result into the state (it never generates)."""
        state.history_added.connect(lambda ev, replaces: self.add_result(to_qimage(ev.image), ev, replaces))
        self.itemClicked.connect(lambda item: state.restore_result(item.data(Qt.ItemDataRole.UserRole), self.image_of(item)))

    @staticmethod
    def image_of(item: QListWidgetItem) -> QImage:
        return to_qimage(item.data(Qt.ItemDataRole.UserRole).image)

    def add_result(self, image: QImage, finished: Finished, replaces: bool = False) -> QListWidgetItem:
        thumb = QPixmap.fromImage(image).scaled(self.THUMB, self.THUMB, Qt.AspectRatioMode.KeepAspectRatio,
                                                Qt.TransformationMode.SmoothTransformation)  # fmt: skip
        item = QListWidgetItem(QIcon(thumb), f"seed {finished.params.seed}")
        item.setData(Qt.ItemDataRole.UserRole, finished)
        item.setToolTip(finished.params.prompt)
        if replaces and self.count():
            self.takeItem(0)
        self.insertItem(0, item)
        self.setCurrentItem(item)
        while self.count() > HISTORY_LIMIT:  # as the state keeps: live mode makes many results
            self.takeItem(self.count() - 1)
        return item
