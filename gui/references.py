"""Reference layers (issue 27): pictures the result follows in style and/or composition, in the document.

A reference is not painted on the canvas: it is a picture (kept at most 1024 px on its long side), a weight, a mode,
a start/end range and what it is limited to (everywhere, the Mask layer, a region, or the mask a file came with).
The document keeps them in order (`doc.references`); adding and deleting are undoable commands on that list, and
the request gets them as `Reference` data at output size (engine/composition.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from PySide6.QtGui import QUndoCommand

from noisebrush.engine.composition import MAX_REFERENCES, Reference, reference_picture
from noisebrush.engine.errors import UserError
from noisebrush.gui.document import Document

EVERYWHERE, MASK_LAYER, SAVED_MASK = "", "mask", "saved"
FIELDS = ("weight", "mode", "start", "end", "limit", "adapter", "enabled")


@dataclass(eq=False)
class ReferenceLayer:
    key: str
    image: np.ndarray  # RGB uint8, at most REFERENCE_KEEP px on its long side
    weight: float = 0.8
    mode: str = "both"
    start: float = 0.0
    end: float = 1.0
    limit: str = EVERYWHERE  # "", "mask", a region's key, or "saved" (`saved_mask`, from a file)
    saved_mask: np.ndarray | None = None
    adapter: str = ""
    enabled: bool = True

    def describe(self) -> dict:
        """Its settings as JSON (autosave, projects); the picture and a saved mask travel as PNGs beside it."""
        return {"key": self.key, **{f: getattr(self, f) for f in FIELDS}}

    def limit_mask(self, doc: Document, width: int, height: int) -> np.ndarray | None:
        """Where it applies at output size (HxW, white), or None for everywhere; UserError when that area is gone."""
        if self.limit == EVERYWHERE:
            return None
        if self.limit == SAVED_MASK and self.saved_mask is not None:
            import cv2

            m = self.saved_mask
            return m if m.shape == (height, width) else cv2.resize(m, (width, height), interpolation=cv2.INTER_LINEAR)
        layer = doc.edit_layers["mask"] if self.limit == MASK_LAYER else doc.regions.get(self.limit)
        if layer is None:
            raise UserError("a reference is limited to a region that was deleted: choose where it applies again")
        mask = layer.coverage_at(width, height)
        if mask is None:
            what = "the Mask layer" if self.limit == MASK_LAYER else "its region"
            raise UserError(f"a reference is limited to {what}, which is empty: paint it, or let the reference apply everywhere")
        return mask

    def to_reference(self, doc: Document, width: int, height: int) -> Reference | None:
        if not self.enabled or self.weight <= 0:
            return None
        return Reference(self.image, self.weight, self.mode, self.start, self.end, self.limit_mask(doc, width, height),
                         self.adapter)  # fmt: skip


class ReferencesEdit(QUndoCommand):
    def __init__(self, doc: Document, before: list[ReferenceLayer], after: list[ReferenceLayer], text: str) -> None:
        super().__init__(text)
        self.doc, self.before, self.after = doc, before, after

    def _set(self, layers: list[ReferenceLayer]) -> None:
        self.doc.references = list(layers)
        self.doc.references_changed.emit()

    def redo(self) -> None:
        self._set(self.after)

    def undo(self) -> None:
        self._set(self.before)


def add_reference(doc: Document, image: np.ndarray, **fields) -> ReferenceLayer:
    """A new reference at the end of the list (undoable). UserError for a picture no reference can use."""
    if len(doc.references) >= MAX_REFERENCES:
        raise UserError(f"at most {MAX_REFERENCES} reference pictures: delete one first")
    doc.reference_serial += 1
    layer = ReferenceLayer(f"reference{doc.reference_serial}", reference_picture(np.asarray(image)[..., :3]), **fields)
    doc.undo_stack.push(ReferencesEdit(doc, list(doc.references), [*doc.references, layer], "Add reference"))
    return layer


def delete_reference(doc: Document, key: str) -> None:
    before = list(doc.references)
    doc.undo_stack.push(ReferencesEdit(doc, before, [r for r in before if r.key != key], "Delete reference"))


def replace_picture(doc: Document, key: str, image: np.ndarray) -> None:
    """Another picture for a reference (undoable: the old layer object comes back on undo)."""
    before = list(doc.references)
    after = [dataclasses.replace(r, image=reference_picture(np.asarray(image)[..., :3])) if r.key == key else r
             for r in before]  # fmt: skip
    doc.undo_stack.push(ReferencesEdit(doc, before, after, "Change reference picture"))


def set_reference(doc: Document, key: str, **changes) -> None:
    """A reference's settings (weight, mode, range, limit): a new request, as a stroke is."""
    layer = next(r for r in doc.references if r.key == key)
    for name, value in changes.items():
        if name not in FIELDS:
            raise AttributeError(name)
        setattr(layer, name, value)
    doc.references_changed.emit()


def reference_specs(doc: Document, width: int, height: int) -> tuple[Reference, ...]:
    return tuple(r for layer in doc.references if (r := layer.to_reference(doc, width, height)) is not None)


def replace_references(doc: Document, saved: tuple[Reference, ...] | list[tuple[dict, np.ndarray, np.ndarray | None]],
                       text: str) -> None:  # fmt: skip
    """Set the document's references to a file's or history item's: Reference data, or (describe() dict, picture,
    saved mask) from autosave and projects. One undo step with the caller's macro."""
    layers = []
    for item in list(saved)[:MAX_REFERENCES]:
        doc.reference_serial += 1
        key = f"reference{doc.reference_serial}"
        if isinstance(item, Reference):
            limit = EVERYWHERE if item.mask is None else SAVED_MASK
            layers.append(ReferenceLayer(key, item.image, item.weight, item.mode, item.start, item.end, limit, item.mask,
                                         item.adapter))  # fmt: skip
            continue
        info, image, mask = item
        try:
            values = _checked(info)
            ref = Reference(image, values["weight"], values["mode"], values["start"], values["end"], None, values["adapter"])
        except UserError:
            continue  # a damaged entry is left out; the rest come back
        limit = values["limit"] if values["limit"] != SAVED_MASK or mask is not None else EVERYWHERE
        layers.append(ReferenceLayer(key, ref.image, ref.weight, ref.mode, ref.start, ref.end, limit, mask, ref.adapter,
                                     values["enabled"]))  # fmt: skip
    if layers or doc.references:
        doc.undo_stack.push(ReferencesEdit(doc, list(doc.references), layers, text))


def _checked(info: dict) -> dict:
    """A saved describe() dict's settings, with defaults for what is missing and UserError for wrong types."""
    defaults = {f.name: f.default for f in dataclasses.fields(ReferenceLayer) if f.name in FIELDS}
    values = {k: info.get(k, v) for k, v in defaults.items()}
    if not isinstance(values["limit"], str) or not isinstance(values["enabled"], bool):
        raise UserError("a saved reference is damaged")
    return values
