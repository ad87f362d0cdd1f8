"""The LoRA list of the Generate panel: add one from the models the backend found, weight it, remove it."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QToolButton, QVBoxLayout, QWidget

from noisebrush.gui.state import AppState
from noisebrush.gui.widgets import slider


class LoraList(QWidget):
    def __init__(self, state: AppState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self._showing = False
        self.picker = QComboBox(toolTip="LoRAs found in your models folder")
        self.rows: dict[str, tuple[QWidget, object, QLabel]] = {}  # path → (row, slider, value label)
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._layout.addWidget(self.picker)
        self.picker.activated.connect(self._add)
        state.models_changed.connect(self._offer)
        state.settings_changed.connect(lambda names, _o: "loras" in names and self.show_settings())
        self._offer()
        self.show_settings()

    def _offer(self) -> None:
        self.picker.clear()
        found = [m for m in self.state.models if m.role == "lora"]
        self.picker.addItem("Add a LoRA…" if found else "No LoRAs in your models folder", "")
        for m in found:
            self.picker.addItem(m.title, m.ref)

    def _add(self, index: int) -> None:
        path = self.picker.itemData(index) or ""
        self.picker.setCurrentIndex(0)
        if path and path not in dict(self.state.settings.loras):
            self.state.update(loras=(*self.state.settings.loras, (path, 1.0)))

    def _set_weight(self, path: str, value: int) -> None:
        if not self._showing:
            self.state.update(loras=tuple((p, value / 100 if p == path else w) for p, w in self.state.settings.loras))

    def _remove(self, path: str) -> None:
        self.state.update(loras=tuple((p, w) for p, w in self.state.settings.loras if p != path))

    def show_settings(self) -> None:
        loras = dict(self.state.settings.loras)
        for path in [p for p in self.rows if p not in loras]:
            self.rows.pop(path)[0].deleteLater()
        self._showing = True
        try:
            for path, weight in loras.items():
                if path not in self.rows:
                    self.rows[path] = self._row(path)
                _row, weight_slider, label = self.rows[path]
                weight_slider.setValue(round(weight * 100))
                label.setText(f"{weight:+.2f}")
        finally:
            self._showing = False

    def _row(self, path: str) -> tuple[QWidget, object, QLabel]:
        row = QWidget()
        line = QHBoxLayout(row)
        line.setContentsMargins(0, 0, 0, 0)
        name = QLabel(Path(path).stem, toolTip=path)
        weight = slider(-200, 200, 100)
        weight.setToolTip("Weight (-2 to 2): 0 is as if the LoRA were not there")
        value = QLabel()
        remove = QToolButton(text="✕", toolTip="Remove this LoRA")
        for w in (name, weight, value, remove):
            line.addWidget(w, 1 if w is weight else 0)
        weight.valueChanged.connect(lambda v, p=path: self._set_weight(p, v))
        remove.clicked.connect(lambda _=False, p=path: self._remove(p))
        self._layout.addWidget(row)
        return row, weight, value
