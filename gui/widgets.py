"""Small widgets and layout helpers shared by the panels and the window."""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtWidgets import (
    QAbstractSlider,
    QAbstractSpinBox,
    QComboBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QWidget,
)


class _WheelNeedsFocus(QObject):
    """The wheel over an unfocused slider, spin box or list scrolls the panel instead of changing the value."""

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802
        if event.type() == QEvent.Type.Wheel and isinstance(obj, QWidget) and not obj.hasFocus():
            event.ignore()  # handled here but not accepted: Qt passes it on to the parent (the scroll area)
            return True
        return False


_wheel_guard = _WheelNeedsFocus()


def wheel_needs_focus(root: QWidget) -> None:
    """Apply to every value widget under `root`; a click (or Tab) focuses one, then the wheel changes it."""
    for w in root.findChildren(QWidget):
        if isinstance(w, (QAbstractSlider, QAbstractSpinBox, QComboBox)):
            w.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
            w.installEventFilter(_wheel_guard)


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
        self._kind = ""
        self._callback = None
        self.action.clicked.connect(self._run_action)

    def show_message(self, text: str, kind: str = "error", action: str | None = None, callback=None) -> None:
        colors = {"error": "#f8d7da; color: #58151c", "info": "#dbeafe; color: #0c2d6b"}
        self.setStyleSheet(f"#banner {{ background: {colors[kind].split(';')[0]}; border-radius: 4px; }} "
                           f"QLabel {{ color: {colors[kind].split('color: ')[1]}; }}")  # fmt: skip
        self.label.setText(text)
        self._kind = kind
        self._callback = callback
        self.action.setVisible(bool(action))
        self.action.setText(action or "")
        self.show()

    def hide_error(self) -> None:
        if self._kind == "error":
            self.hide()

    def _run_action(self) -> None:
        self.hide()
        if self._callback:
            self._callback()
