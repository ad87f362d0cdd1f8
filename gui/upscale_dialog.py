"""Image → Upscale & refine…: how many times larger, by which upscale model, and how much each tile is repainted."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from noisebrush.engine.union import named_union
from noisebrush.gui.state import AppState

LANCZOS = "Lanczos (no upscale model)"


class UpscaleDialog(QDialog):
    def __init__(self, state: AppState, tile: int, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Upscale & refine")
        self.state = state
        s = state.settings
        form = QFormLayout()
        self.scale = QDoubleSpinBox()
        self.scale.setRange(1.0, 8.0)
        self.scale.setSingleStep(0.5)
        self.scale.setDecimals(1)
        self.scale.setSuffix(" ×")
        self.scale.setValue(2.0)
        self.scale.setToolTip("1× refines the picture at its own size")
        self.size_label = QLabel()
        form.addRow("Scale", self.scale)
        form.addRow("", self.size_label)
        row = QHBoxLayout()
        self.upscaler = QComboBox()
        self.upscaler.addItem(LANCZOS, "")
        for m in state.models:
            if m.role == "upscaler":
                self.upscaler.addItem(Path(m.ref).name, m.ref)
        self.upscaler.setToolTip("Upscale models (ESRGAN, RealESRGAN, SwinIR, DAT…) are found in upscale_models/ in "
                                 "the models folder")  # fmt: skip
        browse = QPushButton("File…")
        browse.clicked.connect(self._browse)
        row.addWidget(self.upscaler, 1)
        row.addWidget(browse)
        form.addRow("Upscaler", row)
        self.strength = QDoubleSpinBox()
        self.strength.setRange(0.0, 1.0)
        self.strength.setSingleStep(0.05)
        self.strength.setValue(0.3)
        self.strength.setToolTip("How much of each tile is repainted with the prompt; 0 upscales only")
        form.addRow("Refine", self.strength)
        self.tile_net = QComboBox()
        self.tile_net.addItem("None", "")
        family = next((m.family for m in state.models if m.role == "base" and m.ref == s.model), None)
        for m in state.models:
            if m.role != "controlnet" or (family is not None and m.family not in (family, "")):
                continue
            if m.control_kind == "tile":
                self.tile_net.insertItem(1, m.title, m.ref)  # a tile ControlNet the person has: first, preselected
            elif m.control_kind is None and named_union(m.ref):
                self.tile_net.addItem(m.title, m.ref)  # an SDXL ProMax Union serves tile too
        if any(m.control_kind == "tile" for m in state.models if m.ref == self.tile_net.itemData(1)):
            self.tile_net.setCurrentIndex(1)  # keeps a strong refine faithful (a Union may lack tile: not preselected)
        self.tile_net.setToolTip("A tile ControlNet (SD1.5 tile, SDXL tile or an SDXL ProMax Union) in the models "
                                 "folder keeps each repainted tile faithful to the picture, so Refine can go higher")  # fmt: skip
        form.addRow("Tile ControlNet", self.tile_net)
        form.addRow("", QLabel(f"in tiles of {tile} px (the model's own size), with “{_short(s.prompt)}”"))
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.ok = self.buttons.addButton("Upscale", QDialogButtonBox.ButtonRole.AcceptRole)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.buttons)
        self._picture = None
        self.scale.valueChanged.connect(self._show_size)
        self._show_size()

    def _show_size(self) -> None:
        from noisebrush.engine.errors import UserError
        from noisebrush.engine.upscale import check_scale

        if self._picture is None:
            self._picture = self.state.upscale_source()
        size = None if self._picture is None else (self._picture.shape[1], self._picture.shape[0])
        if size is None:
            self.size_label.setText("Nothing to upscale yet: generate a picture first")
            self.ok.setEnabled(False)
            return
        try:
            w, h = check_scale(self.scale.value(), *size)
        except UserError as exc:
            self.size_label.setText(str(exc))
            self.ok.setEnabled(False)
            return
        self.size_label.setText(f"{size[0]}×{size[1]} → {w}×{h} px")
        self.ok.setEnabled(True)

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Upscale model", "", "Upscale models (*.safetensors *.pth *.pt)")
        if path:
            self.upscaler.addItem(Path(path).name, path)
            self.upscaler.setCurrentIndex(self.upscaler.count() - 1)

    def choice(self) -> tuple[float, str, float, str]:
        return (self.scale.value(), str(self.upscaler.currentData() or ""), self.strength.value(),
                str(self.tile_net.currentData() or ""))  # fmt: skip


def _short(text: str, words: int = 6) -> str:
    parts = text.split()
    return " ".join(parts[:words]) + ("…" if len(parts) > words else "")
