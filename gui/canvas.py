"""The canvas: the result (or the step preview) under the control layers, and the drawing tools."""

from __future__ import annotations

import math

import numpy as np
from PySide6.QtCore import QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import (
    QBrush,
    QColor,
    QImage,
    QMouseEvent,
    QPainter,
    QPaintEvent,
    QPen,
    QRadialGradient,
    QTabletEvent,
    QWheelEvent,
)
from PySide6.QtWidgets import QSizePolicy, QWidget

from noisebrush.engine.controls import paint_order
from noisebrush.engine.pose import Person
from noisebrush.gui.document import INK, MASK_RGB, PAPER_RGB, Document, ImageEdit
from noisebrush.gui.pose_editor import PoseEditing

PAPER = QColor(*PAPER_RGB)


class Canvas(PoseEditing, QWidget):
    stroke_finished = Signal(str)  # layer kind; also the end of a pose drag
    drag_moved = Signal()  # a joint, a person or a stroke in progress moved (many times during one drag)
    files_dropped = Signal(list)  # local paths
    zoom_changed = Signal(float)

    def __init__(self, document: Document, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.doc = document
        self.active_layer = next(iter(document.layers))
        self.tool = "brush"  # or "eraser"
        self.brush_size = 10.0
        self.depth_value = 200  # grey of the depth brush: near = bright
        self.paint_color = QColor(200, 60, 50)  # the Image layer's brush: plain colours to guide a refine
        self.result: QImage | None = None  # final image or latest preview, any size; drawn scaled
        self.result_is_preview = False
        self.view = "both"
        self.scale = 1.0
        self.offset = QPointF(0, 0)
        self._stroke_before: QImage | None = None
        self._stroke_source: np.ndarray | None = None  # the layer's exact map before the stroke (undo brings it back)
        self._dirty = QRectF()
        self._last: QPointF | None = None
        self._pressure = 1.0
        self._pan_from: QPointF | None = None
        self._rect_from: QPointF | None = None  # Shift+drag on the mask layer: a rectangle from here
        self.selected_person: int | None = None
        self._drag: tuple[str, int, int, QPointF, list[Person]] | None = None  # mode, person, joint, start, before
        self.setMouseTracking(True)
        self.setAcceptDrops(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(320, 320)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)
        document.changed.connect(lambda _k: self.update())
        document.regions_changed.connect(self.update)

    def _mask_colour(self) -> QColor:
        """The Mask layer's red, or a region's own colour."""
        region = self.doc.regions.get(self.active_layer)
        return QColor(*region.colour) if region is not None else QColor(*MASK_RGB)

    def _editor(self) -> str:
        """How the active layer is edited: "ink", "grey", "pose" or "image" (see noisebrush.engine.controls)."""
        return self.doc.layer(self.active_layer).info.editor

    def sizeHint(self) -> QSize:
        return QSize(640, 640)

    # --- view transform --------------------------------------------------------------------
    def fit(self) -> None:
        w, h = self.doc.size.width(), self.doc.size.height()
        self.scale = max(0.05, min((self.width() - 16) / w, (self.height() - 16) / h))
        self.offset = QPointF((self.width() - w * self.scale) / 2, (self.height() - h * self.scale) / 2)
        self.zoom_changed.emit(self.scale)
        self.update()

    def zoom(self, factor: float, anchor: QPointF | None = None) -> None:
        anchor = anchor if anchor is not None else QPointF(self.width() / 2, self.height() / 2)
        doc_pt = self.to_doc(anchor)
        self.scale = min(32.0, max(0.05, self.scale * factor))
        self.offset = anchor - doc_pt * self.scale
        self.zoom_changed.emit(self.scale)
        self.update()

    def to_doc(self, p: QPointF) -> QPointF:
        return (p - self.offset) / self.scale

    def doc_rect_on_screen(self) -> QRectF:
        return QRectF(self.offset, self.offset + QPointF(self.doc.size.width(), self.doc.size.height()) * self.scale)

    def resizeEvent(self, event) -> None:  # noqa: N802
        self.fit()

    # --- showing results -------------------------------------------------------------------
    def show_result(self, image: QImage | None, preview: bool = False) -> None:
        self.result = image
        self.result_is_preview = preview
        self.update()

    def _result_rect(self, target: QRectF) -> QRectF:
        """Where the result goes: the document's rectangle, or, for a result of another shape (an extended
        picture, before Edit this makes it the document), a rectangle of its own shape around the same centre."""
        ar = self.result.width() / max(1, self.result.height())
        if abs(ar - target.width() / max(1e-6, target.height())) < 0.01:
            return target
        w, h = (target.height() * ar, target.height()) if ar >= 1 else (target.width(), target.width() / ar)
        return QRectF(target.center().x() - w / 2, target.center().y() - h / 2, w, h)

    def set_view(self, view: str) -> None:
        """What the canvas shows: "both" (the sketch over the result), "result" only, or "sketch" only."""
        self.view = view
        self.update()

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(58, 60, 66))
        target = self.doc_rect_on_screen()
        p.fillRect(target, PAPER)
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
        picture, mask = self.doc.edit_layers["image"], self.doc.edit_layers["mask"]
        if picture.settings.visible:  # the picture being edited, under the result
            p.drawImage(target, picture.image)
        if self.result is not None and self.view != "sketch":
            p.drawImage(self._result_rect(target), self.result)
        overlays = [self.doc.layers[k] for k in paint_order()] + list(self.doc.regions.values()) + [mask]
        for layer in overlays if self.view != "result" else ():
            if layer.settings.visible:
                p.setOpacity(layer.settings.opacity)
                p.drawImage(target, layer.display_image())
        p.setOpacity(1.0)
        p.setPen(QPen(QColor(20, 20, 20, 90), 1))
        p.drawRect(target.adjusted(-0.5, -0.5, 0.5, 0.5))
        if self._editor() == "pose" and self.doc.layer(self.active_layer).settings.visible and self.view != "result":
            self._paint_handles(p)
        p.end()

    # --- drawing ---------------------------------------------------------------------------
    def _can_paint(self) -> bool:
        return self._editor() in ("ink", "grey", "paint", "mask") and self.doc.layer(self.active_layer).settings.visible

    def _begin(self, pos: QPointF) -> None:
        layer = self.doc.layer(self.active_layer)
        self._stroke_before, self._stroke_source = layer.image.copy(), layer.source()
        self._dirty = QRectF()  # what the stroke touched, in document px: undo keeps only that
        self._last = self.to_doc(pos)
        self._dab(self._last, self._last)

    def _dab(self, a: QPointF, b: QPointF) -> None:
        layer = self.doc.layer(self.active_layer)
        width = max(1.0, self.brush_size * self._pressure)
        p = QPainter(layer.image)
        p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        if self.tool == "eraser":
            p.setCompositionMode(QPainter.CompositionMode.CompositionMode_Clear)
        if self._editor() == "grey" and self.tool == "brush":
            # a soft grey brush: radial dabs along the segment
            grey = QColor(self.depth_value, self.depth_value, self.depth_value)
            steps = max(1, int(math.hypot(b.x() - a.x(), b.y() - a.y()) / max(1.0, width / 4)))
            p.setPen(Qt.PenStyle.NoPen)
            for i in range(steps + 1):
                c = a + (b - a) * (i / steps)
                g = QRadialGradient(c, width / 2)
                g.setColorAt(0.0, grey)
                g.setColorAt(0.6, grey)
                edge = QColor(grey)
                edge.setAlpha(0)
                g.setColorAt(1.0, edge)
                p.setBrush(QBrush(g))
                p.drawEllipse(c, width / 2, width / 2)
        else:
            colour = self._mask_colour() if self._editor() == "mask" else self.paint_color if self._editor() == "paint" else INK
            p.setPen(QPen(colour, width, Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap, Qt.PenJoinStyle.RoundJoin))
            p.drawLine(a, b)
        p.end()
        r = QRectF(a, b).normalized().adjusted(-width, -width, width, width)
        self._dirty = self._dirty.united(r)
        self.update(self._screen_rect(r))

    def _screen_rect(self, doc_rect: QRectF):
        return (
            QRectF(self.offset + doc_rect.topLeft() * self.scale, doc_rect.size() * self.scale)
            .toAlignedRect()
            .adjusted(-2, -2, 2, 2)
        )

    def _move(self, pos: QPointF) -> None:
        if self._last is None:
            return
        cur = self.to_doc(pos)
        if self._rect_from is not None:  # Shift+drag on the mask: a rectangle, redrawn from the layer as it was
            layer = self.doc.layer(self.active_layer)
            layer.image = self._stroke_before.copy()
            p = QPainter(layer.image)
            if self.tool == "eraser":
                p.setCompositionMode(QPainter.CompositionMode.CompositionMode_Clear)
            box = QRectF(self._rect_from, cur).normalized()
            p.fillRect(box, self._mask_colour())
            p.end()
            self._dirty = self._dirty.united(box)
            self.update()
        else:
            self._dab(self._last, cur)
            self._last = cur
        self.drag_moved.emit()  # live mode draws while the stroke goes on, not only after it

    def _end(self) -> None:
        if self._stroke_before is None:
            return
        layer = self.doc.layer(self.active_layer)
        before, self._stroke_before, self._last = self._stroke_before, None, None
        name = "Mask rectangle" if self._rect_from is not None else "Erase" if self.tool == "eraser" else "Stroke"
        self._rect_from = None
        rect = self._dirty.toAlignedRect().adjusted(-2, -2, 2, 2).intersected(layer.image.rect())
        self.doc.undo_stack.push(ImageEdit(layer, before, layer.image, name, source_before=self._stroke_source, rect=rect))
        self.stroke_finished.emit(self.active_layer)

    def mousePressEvent(self, e: QMouseEvent) -> None:  # noqa: N802
        if e.button() == Qt.MouseButton.MiddleButton or (
            e.button() == Qt.MouseButton.LeftButton and e.modifiers() & Qt.KeyboardModifier.AltModifier
        ):
            self._pan_from = e.position()
            return
        if self._editor() == "pose" and self.doc.layer(self.active_layer).settings.visible:
            self._pose_press(e)
            return
        if e.button() == Qt.MouseButton.LeftButton and self._can_paint():
            self._pressure = 1.0
            shift = e.modifiers() & Qt.KeyboardModifier.ShiftModifier
            self._rect_from = self.to_doc(e.position()) if shift and self._editor() == "mask" else None
            self._begin(e.position())

    def mouseMoveEvent(self, e: QMouseEvent) -> None:  # noqa: N802
        if self._pan_from is not None:
            self.offset += e.position() - self._pan_from
            self._pan_from = e.position()
            self.update()
            return
        if self._drag is not None:
            self._pose_move(e.position())
        elif self._stroke_before is not None:
            self._move(e.position())

    def mouseReleaseEvent(self, e: QMouseEvent) -> None:  # noqa: N802
        if self._pan_from is not None:
            self._pan_from = None
            return
        if e.button() == Qt.MouseButton.LeftButton:
            if self._drag is not None:
                self._pose_release()
            else:
                self._end()

    def tabletEvent(self, e: QTabletEvent) -> None:  # noqa: N802
        """Pen pressure sets the width of a painted stroke. Anything else the pen does (drag a joint, pan with Alt or
        the middle button) is ignored here, so Qt turns it into the mouse events that do it."""
        self._pressure = max(0.05, e.pressure())
        t = e.type()
        plain_press = e.button() == Qt.MouseButton.LeftButton and not e.modifiers() & Qt.KeyboardModifier.AltModifier
        if t == QTabletEvent.Type.TabletPress and plain_press and self._can_paint():
            self._begin(e.position())
        elif t == QTabletEvent.Type.TabletMove and self._stroke_before is not None:
            self._move(e.position())
        elif t == QTabletEvent.Type.TabletRelease and self._stroke_before is not None:
            self._end()
            self._pressure = 1.0
        else:
            e.ignore()
            return
        e.accept()

    def wheelEvent(self, e: QWheelEvent) -> None:  # noqa: N802
        steps = e.angleDelta().y() / 120.0
        if steps:
            self.zoom(1.15**steps, e.position())

    # --- drag & drop -----------------------------------------------------------------------
    def dragEnterEvent(self, e) -> None:  # noqa: N802
        if e.mimeData().hasUrls():
            e.acceptProposedAction()

    def dropEvent(self, e) -> None:  # noqa: N802
        paths = [u.toLocalFile() for u in e.mimeData().urls() if u.isLocalFile()]
        if paths:
            self.files_dropped.emit(paths)
            e.acceptProposedAction()
