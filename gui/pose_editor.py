"""The canvas's pose editor: joint handles, hit tests, dragging joints and people, and the Pose menu's edits.

A part of `Canvas` (gui/canvas.py), kept apart because it is a concern of its own; it uses the canvas's document,
view transform (`offset`, `scale`, `to_doc`), `selected_person`, `_drag` and signals.
"""

from __future__ import annotations

import math

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QMouseEvent, QPainter, QPen

from noisebrush.engine.pose import COLORS, Person, default_person
from noisebrush.gui.document import ImageEdit

HANDLE_RADIUS = 5.0  # screen pixels


class PoseEditing:
    def _paint_handles(self, p: QPainter) -> None:
        """Joint handles of the pose editor: filled when drawn, hollow when hidden; the selected person boxed."""
        p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        for n, person in enumerate(self.doc.pose_layer().people):
            if n == self.selected_person:
                x0, y0, x1, y1 = self._person_bounds(person)
                p.setBrush(Qt.BrushStyle.NoBrush)
                p.setPen(QPen(QColor(40, 120, 255, 230), 1.5, Qt.PenStyle.DashLine))  # visible on paper and on images
                p.drawRect(QRectF(self.offset + QPointF(x0, y0) * self.scale, self.offset + QPointF(x1, y1) * self.scale))
            for i, pt in enumerate(person.keypoints):
                if pt is None:
                    continue
                c = self.offset + QPointF(*pt) * self.scale
                if i in person.hidden:
                    p.setBrush(Qt.BrushStyle.NoBrush)
                    p.setPen(QPen(QColor(150, 150, 150), 1.5, Qt.PenStyle.DotLine))
                else:
                    p.setBrush(QColor(*COLORS[i]))
                    p.setPen(QPen(QColor(255, 255, 255), 1.5))
                p.drawEllipse(c, HANDLE_RADIUS, HANDLE_RADIUS)

    @staticmethod
    def _person_bounds(person: Person, pad: float = 12.0) -> tuple[float, float, float, float]:
        pts = [q for q in person.keypoints if q is not None]
        xs, ys = [q[0] for q in pts], [q[1] for q in pts]
        return min(xs) - pad, min(ys) - pad, max(xs) + pad, max(ys) + pad

    # --- pose editing ------------------------------------------------------------------------
    def hit_joint(self, pos: QPointF) -> tuple[int, int] | None:
        """(person, joint) under a screen position, hidden joints included (they can be shown again)."""
        best, best_d = None, (HANDLE_RADIUS + 4) / self.scale
        d = self.to_doc(pos)
        for n, person in enumerate(self.doc.pose_layer().people):
            for i, pt in enumerate(person.keypoints):
                if pt is not None:
                    dist = math.hypot(pt[0] - d.x(), pt[1] - d.y())
                    if dist <= best_d:
                        best, best_d = (n, i), dist
        return best

    def hit_person(self, pos: QPointF) -> int | None:
        d = self.to_doc(pos)
        for n, person in reversed(list(enumerate(self.doc.pose_layer().people))):
            x0, y0, x1, y1 = self._person_bounds(person)
            if x0 <= d.x() <= x1 and y0 <= d.y() <= y1:
                return n
        return None

    def edit_people(self, people: list[Person], text: str) -> None:
        """Replace the skeletons undoably."""
        layer = self.doc.pose_layer()
        self.doc.undo_stack.push(ImageEdit(layer, layer.image.copy(), layer.image.copy(), text, layer.people, people))
        self.stroke_finished.emit(self.doc.pose_layer().kind)

    def add_person(self) -> None:
        w, h = self.doc.size.width(), self.doc.size.height()
        n = len(self.doc.pose_layer().people)
        person = default_person(w * (0.5 + 0.18 * ((n + 1) // 2) * (-1) ** n), h * 0.5, h * 0.8)
        self.edit_people(self.doc.pose_layer().people + [person], "Add person")
        self.selected_person = len(self.doc.pose_layer().people) - 1

    def _change_selected(self, fn, text: str) -> None:
        people = [q.copy() for q in self.doc.pose_layer().people]
        if self.selected_person is None or self.selected_person >= len(people):
            return
        result = fn(people[self.selected_person])
        if result is None:
            del people[self.selected_person]
            self.selected_person = None
        else:
            people[self.selected_person] = result
        self.edit_people(people, text)

    def remove_person(self) -> None:
        self._change_selected(lambda q: None, "Remove person")

    def mirror_person(self) -> None:
        self._change_selected(lambda q: q.mirrored(), "Mirror person")

    def scale_person(self, factor: float) -> None:
        self._change_selected(lambda q: q.scaled(factor), "Scale person")

    def show_all_joints(self) -> None:
        self._change_selected(lambda q: Person(list(q.keypoints)), "Show hidden joints")

    def _pose_press(self, e: QMouseEvent) -> None:
        layer = self.doc.pose_layer()
        joint = self.hit_joint(e.position())
        if e.button() == Qt.MouseButton.RightButton:
            if joint is not None:
                n, i = joint
                people = [q.copy() for q in layer.people]
                hide = i not in people[n].hidden
                people[n] = people[n].with_hidden(i, hide)
                self.selected_person = n
                self.edit_people(people, "Hide joint" if hide else "Show joint")
            return
        before = [q.copy() for q in layer.people]
        start = self.to_doc(e.position())
        if joint is not None and not e.modifiers() & Qt.KeyboardModifier.ShiftModifier:
            self.selected_person = joint[0]
            self._drag = ("joint", joint[0], joint[1], start, before)
        else:
            n = joint[0] if joint is not None else self.hit_person(e.position())
            self.selected_person = n
            if n is not None:
                self._drag = ("person", n, -1, start, before)
        self.update()

    def _pose_move(self, pos: QPointF) -> None:
        mode, n, i, start, before = self._drag
        layer = self.doc.pose_layer()
        d = self.to_doc(pos)
        people = [q.copy() for q in before]
        if mode == "joint":
            people[n] = people[n].with_point(i, (d.x(), d.y()))
        else:
            people[n] = people[n].translated(d.x() - start.x(), d.y() - start.y())
        layer.people = people
        layer.changed.emit()
        self.drag_moved.emit()

    def _pose_release(self) -> None:
        mode, n, i, start, before = self._drag
        self._drag = None
        layer = self.doc.pose_layer()
        after = [q.copy() for q in layer.people]
        if [q.keypoints for q in after] != [q.keypoints for q in before]:
            self.doc.undo_stack.push(ImageEdit(layer, layer.image.copy(), layer.image.copy(),
                                               "Move joint" if mode == "joint" else "Move person", before, after))  # fmt: skip
            self.stroke_finished.emit(self.doc.pose_layer().kind)
