"""Region layers: a prompt for each painted area (issue 26), in the document like the Mask layer.

A region is a ControlLayer whose kind is its own key ("region1", "region2", …) with the mask editor, so the
canvas paints it, undo covers its strokes, and autosave and resize treat it like any layer. What it adds is its
prompt, negative and colour, and that there may be several: adding, deleting and reordering them are undoable
commands on the document's ordered `regions` (bottom first: an upper region wins where they overlap, the rule of
engine/composition.py). The request gets them as `Region` data at output size.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QSize
from PySide6.QtGui import QUndoCommand

from noisebrush.engine.composition import MAX_REGIONS, Region
from noisebrush.engine.controls import ControlKind, ink_to_map
from noisebrush.engine.errors import UserError
from noisebrush.gui.document import ControlLayer, Document

COLOURS = [(255, 140, 0), (30, 144, 255), (46, 180, 70), (200, 80, 200), (230, 190, 0), (0, 190, 190),
           (240, 80, 60), (120, 90, 230)]  # fmt: skip


def _tinted(colour: tuple[int, int, int]):
    def layer_from_map(rgb: np.ndarray) -> np.ndarray:
        out = np.empty(rgb.shape[:2] + (4,), np.uint8)
        out[..., :3] = colour
        out[..., 3] = rgb.max(axis=2)
        return out

    return layer_from_map


class RegionLayer(ControlLayer):
    def __init__(self, key: str, size: QSize, prompt: str = "", negative: str = "",
                 colour: tuple[int, int, int] = COLOURS[0]) -> None:  # fmt: skip
        kind = ControlKind(key, "Region", "where its prompt applies (white)", "mask", (), ink_to_map, _tinted(colour),
                           paint_order=900, opacity=0.4)  # fmt: skip
        super().__init__(kind, size)
        self.prompt, self.negative, self.colour = prompt, negative, tuple(colour)

    @property
    def title(self) -> str:
        """The prompt's first words, as the layer panel names it."""
        words = self.prompt.split()
        return " ".join(words[:4]) + ("…" if len(words) > 4 else "") if words else "(no prompt yet)"

    def to_region(self, width: int, height: int) -> Region | None:
        """The region at output size; None while it has no prompt or no paint (it changes nothing yet)."""
        if not self.prompt.strip() or not self.settings.enabled:
            return None
        mask = self.coverage_at(width, height)
        return None if mask is None else Region(mask, self.prompt, self.negative)

    def describe(self) -> dict:
        return {"key": self.kind, "prompt": self.prompt, "negative": self.negative, "colour": list(self.colour)}


class RegionsEdit(QUndoCommand):
    """The document's region list before and after one add, delete or move."""

    def __init__(self, doc: Document, before: list[RegionLayer], after: list[RegionLayer], text: str) -> None:
        super().__init__(text)
        self.doc, self.before, self.after = doc, before, after

    def _set(self, layers: list[RegionLayer]) -> None:
        self.doc.regions = {layer.kind: layer for layer in layers}
        self.doc.regions_changed.emit()

    def redo(self) -> None:
        self._set(self.after)

    def undo(self) -> None:
        self._set(self.before)


def add_region(doc: Document, prompt: str = "", mask: np.ndarray | None = None, negative: str = "",
               colour: tuple[int, int, int] | None = None) -> RegionLayer:  # fmt: skip
    """A new region on top (undoable), painted from `mask` (HxW, white = the region) when given."""
    if len(doc.regions) >= MAX_REGIONS:
        raise UserError(f"at most {MAX_REGIONS} regions: merge some or delete one first")
    doc.region_serial += 1
    key = f"region{doc.region_serial}"
    used = {layer.colour for layer in doc.regions.values()}
    colour = colour or next((c for c in COLOURS if c not in used), COLOURS[doc.region_serial % len(COLOURS)])
    layer = RegionLayer(key, doc.size, prompt, negative, colour)
    layer.changed.connect(lambda k=key: doc.changed.emit(k))
    before = list(doc.regions.values())
    doc.undo_stack.beginMacro("Add region")
    doc.undo_stack.push(RegionsEdit(doc, before, [*before, layer], "Add region"))
    if mask is not None:
        doc.set_layer_from_map(key, np.repeat(np.asarray(mask, np.uint8)[..., None], 3, axis=2), None, "Paint region")
    doc.undo_stack.endMacro()
    return layer


def delete_region(doc: Document, key: str) -> None:
    before = list(doc.regions.values())
    doc.undo_stack.push(RegionsEdit(doc, before, [r for r in before if r.kind != key], "Delete region"))


def move_region(doc: Document, key: str, step: int) -> None:
    """Up (+1) or down (-1) one place: the upper region wins where regions overlap."""
    order = list(doc.regions.values())
    i = next(i for i, r in enumerate(order) if r.kind == key)
    j = max(0, min(len(order) - 1, i + step))
    if i != j:
        after = order.copy()
        after.insert(j, after.pop(i))
        doc.undo_stack.push(RegionsEdit(doc, order, after, "Move region"))


def set_region_text(doc: Document, key: str, prompt: str | None = None, negative: str | None = None) -> None:
    layer = doc.regions[key]
    if prompt is not None:
        layer.prompt = prompt
    if negative is not None:
        layer.negative = negative
    layer.changed.emit()  # a new request: live mode starts a frame, as for a stroke
    doc.regions_changed.emit()


def region_specs(doc: Document, width: int, height: int) -> tuple[Region, ...]:
    return tuple(r for layer in doc.regions.values() if (r := layer.to_region(width, height)) is not None)


def replace_regions(doc: Document, regions: tuple[Region, ...] | list[dict], text: str) -> list[str]:
    """Set the document's regions to those of a file or history item (inside the caller's undo macro).
    `regions`: Region data (at any size), or describe() dicts whose pixels the caller sets by the returned keys."""
    before = list(doc.regions.values())
    if before:
        doc.undo_stack.push(RegionsEdit(doc, before, [], text))
    keys = []
    for r in regions[:MAX_REGIONS]:
        if isinstance(r, Region):
            layer = add_region(doc, r.prompt, r.mask, r.negative)  # the exact mask is kept as the layer's source
        else:
            layer = add_region(doc, str(r.get("prompt", "")), None, str(r.get("negative", "")),
                               tuple(r["colour"]) if _colour_ok(r.get("colour")) else None)  # fmt: skip
        keys.append(layer.kind)
    return keys


def _colour_ok(colour: object) -> bool:
    return isinstance(colour, list) and len(colour) == 3 and all(isinstance(c, int) and 0 <= c <= 255 for c in colour)
