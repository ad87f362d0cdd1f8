"""The canvas: the result (or the step preview) under the control layers, and the drawing tools."""

from __future__ import annotations

import math

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

from gui.document import INK, Document, ImageEdit

PAPER = QColor(250, 249, 245)


class Canvas(QWidget):
    stroke_finished = Signal(str)  # layer kind
    files_dropped = Signal(list)  # local paths
    zoom_changed = Signal(float)

    def __init__(self, document: Document, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.doc = document
        self.active_layer = "scribble"
        self.tool = "brush"  # or "eraser"
        self.brush_size = 10.0
        self.depth_value = 200  # grey of the depth brush: near = bright
        self.result: QImage | None = None  # final image or latest preview, any size; drawn scaled
        self.result_is_preview = False
        self.scale = 1.0
        self.offset = QPointF(0, 0)
        self._stroke_before: QImage | None = None
        self._last: QPointF | None = None
        self._pressure = 1.0
        self._pan_from: QPointF | None = None
        self.setMouseTracking(True)
        self.setAcceptDrops(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(320, 320)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)
        document.changed.connect(lambda _k: self.update())

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

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(58, 60, 66))
        target = self.doc_rect_on_screen()
        p.fillRect(target, PAPER)
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
        if self.result is not None:
            p.drawImage(target, self.result)
        for kind in ("depth", "pose", "scribble"):
            layer = self.doc.layers[kind]
            if layer.settings.visible:
                p.setOpacity(layer.settings.opacity)
                p.drawImage(target, layer.display_image())
        p.setOpacity(1.0)
        p.setPen(QPen(QColor(20, 20, 20, 90), 1))
        p.drawRect(target.adjusted(-0.5, -0.5, 0.5, 0.5))
        p.end()

    # --- drawing ---------------------------------------------------------------------------
    def _can_paint(self) -> bool:
        return self.active_layer in ("scribble", "depth") and self.doc.layers[self.active_layer].settings.visible

    def _begin(self, pos: QPointF) -> None:
        layer = self.doc.layers[self.active_layer]
        self._stroke_before = layer.image.copy()
        self._last = self.to_doc(pos)
        self._dab(self._last, self._last)

    def _dab(self, a: QPointF, b: QPointF) -> None:
        layer = self.doc.layers[self.active_layer]
        width = max(1.0, self.brush_size * self._pressure)
        p = QPainter(layer.image)
        p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        if self.tool == "eraser":
            p.setCompositionMode(QPainter.CompositionMode.CompositionMode_Clear)
        if self.active_layer == "depth" and self.tool == "brush":
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
            p.setPen(QPen(INK, width, Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap, Qt.PenJoinStyle.RoundJoin))
            p.drawLine(a, b)
        p.end()
        r = QRectF(a, b).normalized().adjusted(-width, -width, width, width)
        self.update(self._screen_rect(r))

    def _screen_rect(self, doc_rect: QRectF):
        return QRectF(self.offset + doc_rect.topLeft() * self.scale, doc_rect.size() * self.scale).toAlignedRect().adjusted(-2, -2, 2, 2)

    def _move(self, pos: QPointF) -> None:
        if self._last is None:
            return
        cur = self.to_doc(pos)
        self._dab(self._last, cur)
        self._last = cur

    def _end(self) -> None:
        if self._stroke_before is None:
            return
        layer = self.doc.layers[self.active_layer]
        before, self._stroke_before, self._last = self._stroke_before, None, None
        name = "Erase" if self.tool == "eraser" else "Stroke"
        self.doc.undo_stack.push(ImageEdit(layer, before, layer.image.copy(), name))
        self.stroke_finished.emit(self.active_layer)

    def mousePressEvent(self, e: QMouseEvent) -> None:  # noqa: N802
        if e.button() == Qt.MouseButton.MiddleButton or (
            e.button() == Qt.MouseButton.LeftButton and e.modifiers() & Qt.KeyboardModifier.AltModifier
        ):
            self._pan_from = e.position()
            return
        if e.button() == Qt.MouseButton.LeftButton and self._can_paint():
            self._pressure = 1.0
            self._begin(e.position())

    def mouseMoveEvent(self, e: QMouseEvent) -> None:  # noqa: N802
        if self._pan_from is not None:
            self.offset += e.position() - self._pan_from
            self._pan_from = e.position()
            self.update()
            return
        if self._stroke_before is not None:
            self._move(e.position())

    def mouseReleaseEvent(self, e: QMouseEvent) -> None:  # noqa: N802
        if self._pan_from is not None:
            self._pan_from = None
            return
        if e.button() == Qt.MouseButton.LeftButton:
            self._end()

    def tabletEvent(self, e: QTabletEvent) -> None:  # noqa: N802
        """Pen pressure sets the stroke width; the synthesized mouse events are then ignored."""
        self._pressure = max(0.05, e.pressure())
        t = e.type()
        if t == QTabletEvent.Type.TabletPress and self._can_paint():
            self._begin(e.position())
        elif t == QTabletEvent.Type.TabletMove and self._stroke_before is not None:
            self._move(e.position())
        elif t == QTabletEvent.Type.TabletRelease:
            self._end()
            self._pressure = 1.0
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
