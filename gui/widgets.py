"""Small widgets and layout helpers shared by the panels and the window."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QSlider, QWidget


def row(*widgets: QWidget) -> QHBoxLayout:
    """Widgets side by side, the first one stretching (a slider and its value label, a field and its buttons)."""
    layout = QHBoxLayout()
    for i, w in enumerate(widgets):
        layout.addWidget(w, 1 if i == 0 else 0)
    return layout


def slider(lo: int, hi: int, value: int) -> QSlider:
    s = QSlider(Qt.Orientation.Horizontal)
    s.setRange(lo, hi)
    s.setValue(value)
    return s


class Banner(QFrame):
    """A non-blocking message above the canvas, with optional action button and a close button."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("banner")
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.action = QPushButton()
        self.action.hide()
        close = QPushButton("✕")
        close.setFlat(True)
        close.setFixedWidth(28)
        close.clicked.connect(self.hide)
        row = QHBoxLayout(self)
        row.setContentsMargins(10, 6, 6, 6)
        row.addWidget(self.label, 1)
        row.addWidget(self.action)
        row.addWidget(close)
        self.hide()
        self._callback = None
        self.action.clicked.connect(self._run_action)

    def show_message(self, text: str, kind: str = "error", action: str | None = None, callback=None) -> None:
        colors = {"error": "#f8d7da; color: #58151c", "info": "#dbeafe; color: #0c2d6b"}
        self.setStyleSheet(f"#banner {{ background: {colors[kind].split(';')[0]}; border-radius: 4px; }} "
                           f"QLabel {{ color: {colors[kind].split('color: ')[1]}; }}")  # fmt: skip
        self.label.setText(text)
        self._callback = callback
        self.action.setVisible(bool(action))
        self.action.setText(action or "")
        self.show()

    def _run_action(self) -> None:
        self.hide()
        if self._callback:
            self._callback()
