"""The References box of the layers panel: one row per reference picture (thumbnail, weight, mode, where it
applies, start/end, another picture, delete), and the ways a picture gets in: load, paste, drop, the shown result."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import (
    QApplication,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from noisebrush.engine.composition import REFERENCE_MAX_WEIGHT
from noisebrush.engine.errors import UserError
from noisebrush.gui.document import qimage_to_rgba
from noisebrush.gui.engine_bridge import to_qimage
from noisebrush.gui.references import (
    EVERYWHERE,
    MASK_LAYER,
    SAVED_MASK,
    ReferenceLayer,
    add_reference,
    delete_reference,
    replace_picture,
    set_reference,
)
from noisebrush.gui.state import AppState
from noisebrush.gui.tasks import Task

MODES = {"style": "Style", "composition": "Composition", "both": "Both"}
MODE_TIPS = {"style": "colours, texture, brushwork", "composition": "layout and shapes", "both": "style, layout and subject"}
IMAGE_FILTER = "Images (*.png *.jpg *.jpeg *.webp *.bmp *.tif *.tiff)"
RULE = ("A picture the result follows: Style takes its colours and brushwork, Composition its layout, Both all of "
        "it. The embedded model has its own adapter; SD1.5 and SDXL need an IP-Adapter, ComfyUI servers the IPAdapter "
        "node pack.")  # fmt: skip
THUMB = 56


def thumbnail(image: np.ndarray) -> QPixmap:
    return QPixmap.fromImage(to_qimage(image[..., :3])).scaled(THUMB, THUMB, Qt.AspectRatioMode.KeepAspectRatio,
                                          Qt.TransformationMode.SmoothTransformation)  # fmt: skip


def _spin(value: float, low: float, high: float, step: float, tip: str) -> QDoubleSpinBox:
    box = QDoubleSpinBox(minimum=low, maximum=high, singleStep=step, decimals=2, value=value, toolTip=tip)
    box.setKeyboardTracking(False)  # one request per value, not one per digit typed
    return box


class ReferenceRow(QWidget):
    picture_requested = Signal(str)  # key: load another picture for it

    def __init__(self, state: AppState, layer: ReferenceLayer) -> None:
        super().__init__()
        self.key, doc = layer.key, state.doc
        self.thumb = QLabel(pixmap=thumbnail(layer.image), toolTip="The reference picture (Picture… to change it)")
        self.thumb.setFixedSize(THUMB, THUMB)
        self.thumb.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.enabled = QCheckBox("Use", checked=layer.enabled, toolTip="Off: the reference is kept but not used")
        self.weight = _spin(layer.weight, 0.0, REFERENCE_MAX_WEIGHT, 0.05, "How strongly the result follows the picture")
        self.mode = QComboBox(toolTip="What the result takes from the picture")
        for value, title in MODES.items():
            self.mode.addItem(title, value)
            self.mode.setItemData(self.mode.count() - 1, MODE_TIPS[value], Qt.ItemDataRole.ToolTipRole)
        self.mode.setCurrentIndex(list(MODES).index(layer.mode))
        self.limit = QComboBox(toolTip="Where the reference applies")
        self._fill_limits(state, layer)
        self.adapter = QComboBox(toolTip="The IP-Adapter: Automatic finds one made for the model in the models folder")
        self._fill_adapters(state, layer)
        self.start = _spin(layer.start, 0.0, 1.0, 0.05, "From this share of the steps")
        self.end = _spin(layer.end, 0.0, 1.0, 0.05, "Until this share of the steps")
        picture = QToolButton(text="Picture…", toolTip="Another picture for this reference", autoRaise=True)
        delete = QToolButton(text="✕", toolTip="Delete this reference (Ctrl+Z brings it back)", autoRaise=True)
        grid = QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.addWidget(self.thumb, 0, 0, 3, 1)
        top = QHBoxLayout()
        for w in (self.enabled, QLabel("Weight"), self.weight, self.mode):
            top.addWidget(w)
        top.addStretch(1)
        grid.addLayout(top, 0, 1)
        middle = QHBoxLayout()
        for w in (QLabel("Where"), self.limit, QLabel("Steps"), self.start, QLabel("–"), self.end):
            middle.addWidget(w)
        middle.addStretch(1)
        grid.addLayout(middle, 1, 1)
        bottom = QHBoxLayout()
        bottom.addWidget(QLabel("Adapter"))
        bottom.addWidget(self.adapter, 1)
        bottom.addWidget(picture)
        bottom.addWidget(delete)
        grid.addLayout(bottom, 2, 1)
        grid.setColumnStretch(1, 1)

        def changed(**fields) -> None:
            set_reference(doc, self.key, **fields)

        self.enabled.toggled.connect(lambda on: changed(enabled=on))
        self.weight.valueChanged.connect(lambda v: changed(weight=round(v, 3)))
        self.mode.currentIndexChanged.connect(lambda _i: changed(mode=self.mode.currentData()))
        self.limit.currentIndexChanged.connect(lambda _i: changed(limit=self.limit.currentData()))
        self.adapter.currentIndexChanged.connect(lambda _i: changed(adapter=self.adapter.currentData()))
        self.start.valueChanged.connect(lambda v: changed(start=min(round(v, 3), self.end.value())))
        self.end.valueChanged.connect(lambda v: changed(end=max(round(v, 3), self.start.value())))
        picture.clicked.connect(lambda: self.picture_requested.emit(self.key))
        delete.clicked.connect(lambda: delete_reference(doc, self.key))

    def _fill_adapters(self, state: AppState, layer: ReferenceLayer) -> None:
        """Automatic, and the IP-Adapters found for the current model's family (the embedded model has none)."""
        self.adapter.addItem("Automatic", "")
        info = state.model_info(state.settings.model)
        family = info.family if info is not None and state.settings.model else None
        for m in state.models:
            if m.role == "ip-adapter" and family is not None and m.family == family:
                self.adapter.addItem(m.title, m.ref)
        if layer.adapter and self.adapter.findData(layer.adapter) < 0:
            self.adapter.addItem(layer.adapter.replace("\\", "/").rsplit("/", 1)[-1], layer.adapter)
        self.adapter.setCurrentIndex(max(0, self.adapter.findData(layer.adapter)))

    def _fill_limits(self, state: AppState, layer: ReferenceLayer) -> None:
        self.limit.addItem("Everywhere", EVERYWHERE)
        self.limit.addItem("The Mask layer", MASK_LAYER)
        for i, region in enumerate(state.doc.regions.values(), 1):
            self.limit.addItem(f"Region {i}: {region.title}", region.kind)
        if layer.saved_mask is not None:
            self.limit.addItem("The mask it was saved with", SAVED_MASK)
        index = self.limit.findData(layer.limit)
        self.limit.setCurrentIndex(max(0, index))


class ReferencesBox(QGroupBox):
    """Rebuilt when references come or go (or regions do, which the Where lists name); a value being typed is never
    rebuilt under the cursor: a settings change keeps the rows."""

    edited = Signal()
    error = Signal(str)

    def __init__(self, state: AppState) -> None:
        super().__init__("References")
        self.state = state
        self.rows: dict[str, ReferenceRow] = {}
        self._shown: list[tuple[str, int]] = []
        self._tasks: set[Task] = set()
        self.setAcceptDrops(True)
        add = QPushButton("Add reference…", toolTip="A picture the result follows (Ctrl+Shift+F); or drop one here")
        paste = QPushButton("Paste", toolTip="The picture on the clipboard as a reference")
        result = QPushButton("Use result", toolTip="The shown result as a reference")
        add.clicked.connect(lambda: self.load_dialog())
        paste.clicked.connect(self.paste)
        result.clicked.connect(self.use_result)
        rule = QLabel(RULE, wordWrap=True)
        rule.setStyleSheet("color: #666;")
        buttons = QHBoxLayout()
        for b in (add, paste, result):
            buttons.addWidget(b)
        self.list = QVBoxLayout()
        layout = QVBoxLayout(self)
        layout.addLayout(self.list)
        layout.addLayout(buttons)
        layout.addWidget(rule)
        state.doc.references_changed.connect(self.refresh)
        state.doc.regions_changed.connect(lambda: self.refresh(force=True))
        state.models_changed.connect(lambda: self.refresh(force=True))  # the Adapter lists follow the model list
        state.settings_changed.connect(lambda names, _o: "model" in names and self.refresh(force=True))

    # --- ways in -----------------------------------------------------------------------------------------
    def add_picture(self, image: np.ndarray, key: str | None = None) -> None:
        try:
            if key is None:
                add_reference(self.state.doc, image)
            else:
                replace_picture(self.state.doc, key, image)
        except UserError as exc:
            self.error.emit(str(exc))

    def load(self, path: str, key: str | None = None) -> Task:
        """Read the picture on a worker (a big photo takes a while), then add it."""
        from noisebrush.engine.images import read_image
        from noisebrush.gui.files import about

        task = Task(lambda: read_image(path).image, parent=self)
        self._tasks.add(task)
        task.done.connect(lambda image: (self._tasks.discard(task), self.add_picture(image, key)))
        task.failed.connect(lambda msg: (self._tasks.discard(task), self.error.emit(about(path, msg))))
        return task.start()

    def load_dialog(self, key: str | None = None) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Reference picture", "", IMAGE_FILTER)
        if path:
            self.load(path, key)

    def paste(self) -> None:
        image = QApplication.clipboard().image()
        if image.isNull():
            self.error.emit("The clipboard holds no picture: copy one first")
            return
        self.add_picture(qimage_to_rgba(image)[..., :3])

    def use_result(self) -> None:
        result = self.state.last_result
        if result is None:
            self.error.emit("There is no result yet: generate one first")
            return
        self.add_picture(result.image)

    def dragEnterEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        if event.mimeData().hasUrls() or event.mimeData().hasImage():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802
        mime = event.mimeData()
        if mime.hasImage():
            self.add_picture(qimage_to_rgba(QImage(mime.imageData()))[..., :3])
        for url in mime.urls()[:4]:
            if url.isLocalFile():
                self.load(url.toLocalFile())
        event.acceptProposedAction()

    # --- rows --------------------------------------------------------------------------------------------
    def refresh(self, force: bool = False) -> None:
        refs = self.state.doc.references
        shown = [(r.key, id(r.image)) for r in refs]
        if shown == self._shown and not force:  # only a setting changed: nothing to rebuild
            self.edited.emit()
            return
        self._shown = shown
        for row in self.rows.values():
            row.setParent(None)
            row.deleteLater()
        self.rows = {}
        for layer in refs:
            row = self.rows[layer.key] = ReferenceRow(self.state, layer)
            row.picture_requested.connect(self.load_dialog)
            self.list.addWidget(row)
        self.edited.emit()
