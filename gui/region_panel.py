"""The Regions box of the layers panel: one row per region (paint it, its prompt, shown, up, down, delete)."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QGridLayout,
    QGroupBox,
    QLabel,
    QLineEdit,
    QPushButton,
    QRadioButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from noisebrush.engine.errors import UserError
from noisebrush.gui.regions import RegionLayer, add_region, delete_region, move_region, set_region_text
from noisebrush.gui.state import AppState

RULE = ("Paint where each prompt applies. Where regions overlap the upper one wins; the main prompt rules where no "
        "region is, and its words join every region's prompt.")  # fmt: skip


class RegionRow(QWidget):
    def __init__(self, state: AppState, layer: RegionLayer, group: QButtonGroup, edited) -> None:
        super().__init__()
        self.key = layer.kind
        doc = state.doc
        self.active = QRadioButton(toolTip="Paint this region (brush, eraser; Shift+drag for a rectangle)")
        r, g, b = layer.colour
        self.active.setStyleSheet(f"QRadioButton::indicator {{ background: rgb({r},{g},{b}); border-radius: 7px; }}")
        group.addButton(self.active)
        self.prompt = QLineEdit(layer.prompt, placeholderText="this area's prompt, e.g. a red fox")
        self.negative = QLineEdit(layer.negative, placeholderText="negative (optional)")
        self.visible = QCheckBox("Show", checked=layer.settings.visible)
        up, down, delete = (QToolButton(text=t, toolTip=tip, autoRaise=True) for t, tip in
                            (("▲", "Move up: wins where it overlaps the ones below"), ("▼", "Move down"),
                             ("✕", "Delete this region (Ctrl+Z brings it back)")))  # fmt: skip
        grid = QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.addWidget(self.active, 0, 0)
        grid.addWidget(self.prompt, 0, 1)
        for col, w in enumerate((self.visible, up, down, delete), start=2):
            grid.addWidget(w, 0, col)
        grid.addWidget(self.negative, 1, 1)
        grid.setColumnStretch(1, 1)
        self.prompt.textEdited.connect(lambda t: (set_region_text(doc, self.key, prompt=t), edited()))
        self.negative.textEdited.connect(lambda t: (set_region_text(doc, self.key, negative=t), edited()))
        self.visible.toggled.connect(lambda on: doc.set_layer_settings(self.key, visible=on))
        up.clicked.connect(lambda: move_region(doc, self.key, +1))
        down.clicked.connect(lambda: move_region(doc, self.key, -1))
        delete.clicked.connect(lambda: delete_region(doc, self.key))


class RegionsBox(QGroupBox):
    """Rebuilt when regions come or go or move; a prompt being typed is never rebuilt under the cursor."""

    active_changed = Signal(str)
    edited = Signal()
    error = Signal(str)

    def __init__(self, state: AppState, group: QButtonGroup) -> None:
        super().__init__("Regions")
        self.state, self.group = state, group
        self.rows: dict[str, RegionRow] = {}
        self.add_button = QPushButton("Add region")
        self.add_button.setToolTip("A new region on top (Ctrl+Shift+R): type its prompt, then paint where it applies")
        self.add_button.clicked.connect(lambda: self.add())
        rule = QLabel(RULE, wordWrap=True)
        rule.setStyleSheet("color: #666;")
        self.list = QVBoxLayout()
        layout = QVBoxLayout(self)
        layout.addLayout(self.list)
        layout.addWidget(self.add_button)
        layout.addWidget(rule)
        state.doc.regions_changed.connect(self.refresh)

    def add(self, mask=None) -> None:
        try:
            layer = add_region(self.state.doc, mask=mask)
        except UserError as exc:
            self.error.emit(str(exc))
            return
        self.rows[layer.kind].active.setChecked(True)
        self.rows[layer.kind].prompt.setFocus()

    def refresh(self) -> None:
        regions = list(self.state.doc.regions.values())
        if [r.kind for r in reversed(regions)] == list(self.rows):  # only a prompt changed: nothing to rebuild
            return
        active = next((k for k, row in self.rows.items() if row.active.isChecked()), None)
        for row in self.rows.values():
            self.group.removeButton(row.active)
            row.setParent(None)
            row.deleteLater()
        self.rows = {}
        for layer in reversed(regions):  # top first, as layer panels list them
            row = self.rows[layer.kind] = RegionRow(self.state, layer, self.group, self.edited.emit)
            row.active.toggled.connect(lambda on, k=layer.kind: on and self.active_changed.emit(k))
            self.list.addWidget(row)
        if active in self.rows:
            self.rows[active].active.setChecked(True)
        elif active is not None:  # the active region went away: paint on the first control layer again
            self.active_changed.emit("")
        self.edited.emit()  # a region came, went or moved: a new request
