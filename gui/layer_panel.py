"""The Control layers panel: one box per registered control kind, bound both ways to the Document's layer settings."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QRadioButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from noisebrush.gui.reference_panel import ReferencesBox
from noisebrush.gui.region_panel import RegionsBox
from noisebrush.gui.state import AppState
from noisebrush.gui.widgets import row, slider

EMBEDDED_KINDS = ("scribble", "depth", "pose")
EDIT_VERBS = {"ink": "Draw here", "grey": "Paint here", "pose": "Edit here", "image": "Select"}


class LayerBox(QGroupBox):
    """One control layer's settings: active, used, shown, opacity, weight, start–end, ControlNet."""

    load_requested = Signal(str)
    clear_requested = Signal(str)

    def __init__(self, state: AppState, kind: str, group: QButtonGroup, collapsed: bool = False) -> None:
        self.layer = state.doc.layers[kind]
        super().__init__(self.layer.info.title)
        self.state, self.kind = state, kind
        self._showing = False  # True while the widgets are set from the model: their signals are no edits
        self.active = QRadioButton(EDIT_VERBS.get(self.layer.info.editor, "Select"))
        group.addButton(self.active)
        self.enabled = QCheckBox("Use")
        self.visible = QCheckBox("Show")
        self.opacity = slider(0, 100, 80)
        self.weight = slider(0, 200, 100)
        self.weight_label = QLabel()
        self.start = slider(0, 100, 0)
        self.end = slider(0, 100, 100)
        self.range_label = QLabel()
        self.controlnet = QComboBox()
        self.controlnet.addItem("the model's own", "")
        self.controlnet.setToolTip(f"Which ControlNet turns this layer ({self.layer.info.map_format}) into guidance")
        self.note = QLabel()
        self.note.setWordWrap(True)
        self.note.setStyleSheet("color: #9a5b00;")
        self.note.hide()
        load, clear = QPushButton("Load…"), QPushButton("Clear")
        self.fold = QToolButton(checkable=True, checked=not collapsed, autoRaise=True, toolTip="Show or hide the settings")
        self.fold.setArrowType(Qt.ArrowType.DownArrow if not collapsed else Qt.ArrowType.RightArrow)
        top = QHBoxLayout()
        for w in (self.fold, self.active, self.enabled, self.visible):
            top.addWidget(w)
        top.addStretch(1)
        top.addWidget(load)
        top.addWidget(clear)
        form = QFormLayout()
        form.addRow("Opacity", self.opacity)
        form.addRow("Weight", row(self.weight, self.weight_label))
        range_row = QHBoxLayout()
        range_row.addWidget(self.start, 1)
        range_row.addWidget(self.end, 1)
        range_row.addWidget(self.range_label)
        form.addRow("Start–end", range_row)
        form.addRow("ControlNet", self.controlnet)
        self.details = QWidget()
        details = QVBoxLayout(self.details)
        details.setContentsMargins(0, 0, 0, 0)
        details.addLayout(form)
        self.details.setVisible(not collapsed)
        self.fold.toggled.connect(self._unfold)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.details)
        layout.addWidget(self.note)  # outside the fold: a layer that cannot be used says so even when folded
        for sig in (self.enabled.toggled, self.visible.toggled, self.opacity.valueChanged, self.weight.valueChanged,
                    self.start.valueChanged, self.end.valueChanged, self.controlnet.currentIndexChanged):  # fmt: skip
            sig.connect(self._edited)
        load.clicked.connect(lambda: self.load_requested.emit(kind))
        clear.clicked.connect(lambda: self.clear_requested.emit(kind))
        state.doc.layer_settings_changed.connect(lambda k, _names, _origin: k == kind and self.show_settings())
        state.models_changed.connect(self._offer_models)
        state.settings_changed.connect(lambda names, _o: "model" in names and self._update_note())
        self.show_settings()

    def _unfold(self, on: bool) -> None:
        self.fold.setArrowType(Qt.ArrowType.DownArrow if on else Qt.ArrowType.RightArrow)
        self.details.setVisible(on)

    def add_controlnet(self, title: str, ref: str) -> None:
        if self.controlnet.findData(ref) < 0:
            self.controlnet.addItem(title, ref)

    def _offer_models(self) -> None:
        for m in self.state.models:
            if m.role == "controlnet" and m.control_kind in (self.kind, None):
                self.add_controlnet(m.title, m.ref)
        self._update_note()

    def _update_note(self) -> None:
        missing = self.kind in self.state.kinds_without_controlnet()
        self.note.setText(f"Not used: this model has no {self.layer.info.title} ControlNet. Pick one in this "
                          "layer's ControlNet list (unfold it with the arrow; add it to your models folder first).")  # fmt: skip
        self.note.setVisible(missing)

    def show_settings(self) -> None:
        """Show the layer's settings from the model (after an edit, a restore or an autosave)."""
        s = self.layer.settings
        self._showing = True
        try:
            if s.controlnet:
                self.add_controlnet(s.controlnet.rsplit("/", 1)[-1], s.controlnet)
            self.controlnet.setCurrentIndex(max(0, self.controlnet.findData(s.controlnet)))
            self.enabled.setChecked(s.enabled)
            self.visible.setChecked(s.visible)
            for w, v in ((self.opacity, s.opacity), (self.weight, s.weight), (self.start, s.start), (self.end, s.end)):
                w.setValue(int(round(v * 100)))
        finally:
            self._showing = False
        self.weight_label.setText(f"{s.weight:.2f}")
        self.range_label.setText(f"{round(s.start * 100)}–{round(s.end * 100)}%")
        self._update_note()

    def _edited(self) -> None:
        if self._showing:
            return
        start, end = self.start.value(), self.end.value()
        if start > end:  # the slider being dragged pushes the other one along
            start, end = (start, start) if self.sender() is self.start else (end, end)
        self.state.doc.set_layer_settings(
            self.kind, enabled=self.enabled.isChecked(), visible=self.visible.isChecked(),
            opacity=self.opacity.value() / 100, weight=self.weight.value() / 100, start=start / 100, end=end / 100,
            controlnet=self.controlnet.currentData() or "",
        )  # fmt: skip
        self.show_settings()


class EditLayerBox(QWidget):
    """The picture being edited and the mask: where to paint, show, load, clear (and invert, for the mask)."""

    load_requested = Signal(str)
    clear_requested = Signal(str)

    def __init__(self, state: AppState, kind: str, group: QButtonGroup) -> None:
        super().__init__()
        self.state, self.kind = state, kind
        layer = state.doc.edit_layers[kind]
        self.active = QRadioButton(layer.info.title, toolTip=layer.info.map_format)
        group.addButton(self.active)
        self.visible = QCheckBox("Show", checked=layer.settings.visible)
        self.visible.toggled.connect(lambda on: state.doc.set_layer_settings(kind, visible=on))
        buttons = [QPushButton("Load…" if kind == "image" else "Invert"), QPushButton("Clear")]
        top = QHBoxLayout(self)
        top.setContentsMargins(0, 0, 0, 0)
        for w in (self.active, self.visible):
            top.addWidget(w)
        top.addStretch(1)
        for b in buttons:
            top.addWidget(b)
        if kind == "image":
            buttons[0].clicked.connect(lambda: self.load_requested.emit(kind))
        else:
            buttons[0].clicked.connect(state.doc.invert_mask)
        buttons[1].clicked.connect(lambda: self.clear_requested.emit(kind))


class LayersPanel(QWidget):
    active_changed = Signal(str)
    load_requested = Signal(str)
    clear_requested = Signal(str)

    def __init__(self, state: AppState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.group = QButtonGroup(self)
        self.boxes: dict[str, LayerBox] = {}
        layout = QVBoxLayout(self)
        editing = QGroupBox("Picture to edit")
        editing.setToolTip("Refine, Inpaint and Extend (the Mode setting) work on the Image layer; Inpaint repaints the Mask")
        edit_rows = QVBoxLayout(editing)
        self.edit_boxes: dict[str, EditLayerBox] = {}
        for kind in state.doc.edit_layers:
            box = self.edit_boxes[kind] = EditLayerBox(state, kind, self.group)
            box.load_requested.connect(self.load_requested)
            box.clear_requested.connect(self.clear_requested)
            box.active.toggled.connect(lambda on, k=kind: on and self.active_changed.emit(k))
            edit_rows.addWidget(box)
        layout.addWidget(editing)
        self.regions = RegionsBox(state, self.group)
        # "": the active region went away; the first control layer takes over
        self.regions.active_changed.connect(
            lambda k: self.active_changed.emit(k) if k else self.set_active(next(iter(self.boxes)))
        )  # noqa: E501
        layout.addWidget(self.regions)
        self.references = ReferencesBox(state)
        layout.addWidget(self.references)
        for kind in state.doc.layers:
            # the kinds the embedded model has no ControlNet for start folded: the panel stays short
            box = LayerBox(state, kind, self.group, collapsed=kind not in EMBEDDED_KINDS)
            box.load_requested.connect(self.load_requested)
            box.clear_requested.connect(self.clear_requested)
            box.active.toggled.connect(lambda on, k=kind: on and self.active_changed.emit(k))
            self.boxes[kind] = box
            layout.addWidget(box)
        layout.addStretch(1)
        next(iter(self.boxes.values())).active.setChecked(True)

    def set_active(self, kind: str) -> None:
        (self.boxes.get(kind) or self.edit_boxes.get(kind) or self.regions.rows[kind]).active.setChecked(True)
