"""The sketch document: one control layer per registered kind, their settings, and undoable edits.

Layers are ARGB32 images at document resolution, drawn as the person sees them (dark ink on transparent for
line kinds, greys for depth, OpenPose colours for pose). Each kind's entry in `noisebrush.engine.controls`
converts a layer to the engine's map and back; `control_image` does it at output size.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import cv2
import numpy as np
from PySide6.QtCore import QObject, QRect, QSize, Signal
from PySide6.QtGui import QColor, QImage, QPainter, QUndoCommand, QUndoStack

from noisebrush.engine.controls import (
    INK_RGB,
    ControlKind,
    colour_to_map,
    get_kind,
    ink_to_map,
    layer_kinds,
    map_to_colour,
)
from noisebrush.engine.pose import Person, render_pose
from noisebrush.engine.request import ControlSpec

INK = QColor(*INK_RGB)
PAPER_RGB = (250, 249, 245)
MASK_RGB = (235, 40, 70)  # the mask shows as a translucent red over the picture; the engine gets white = repaint


def _mask_from_map(rgb: np.ndarray) -> np.ndarray:
    out = np.empty(rgb.shape[:2] + (4,), np.uint8)
    out[..., :3] = MASK_RGB
    out[..., 3] = rgb.max(axis=2)
    return out


# Editing layers: not controls (no ControlNet reads them), but described the same way as the control kinds.
EDIT_LAYERS = {
    k.name: k
    for k in (
        ControlKind("image", "Image", "the picture being edited: refined, inpainted or extended", "paint", (),
                    colour_to_map, map_to_colour, paint_order=0, opacity=1.0),
        ControlKind("mask", "Mask", "where to repaint (white)", "mask", (), ink_to_map, _mask_from_map,
                    paint_order=1000, opacity=0.45),
    )
}  # fmt: skip
LAYER_REQUEST_FIELDS = frozenset({"enabled", "weight", "start", "end", "controlnet"})  # the rest only changes the view


def blank(size: QSize) -> QImage:
    img = QImage(size, QImage.Format.Format_ARGB32_Premultiplied)
    img.fill(QColor(0, 0, 0, 0))
    return img


def qimage_to_rgba(img: QImage) -> np.ndarray:
    """A QImage → HxWx4 uint8 RGBA copy (straight alpha)."""
    rgba = img.convertToFormat(QImage.Format.Format_RGBA8888)
    h, w = rgba.height(), rgba.width()
    arr = np.frombuffer(rgba.constBits(), np.uint8, count=rgba.sizeInBytes()).reshape(h, rgba.bytesPerLine())
    return arr[:, : w * 4].reshape(h, w, 4).copy()


def rgb_to_qimage_argb(rgb: np.ndarray, alpha: np.ndarray | None = None) -> QImage:
    h, w = rgb.shape[:2]
    a = np.full((h, w), 255, np.uint8) if alpha is None else alpha
    rgba = np.ascontiguousarray(np.dstack([rgb, a]))
    return QImage(rgba.data, w, h, 4 * w, QImage.Format.Format_RGBA8888).convertToFormat(
        QImage.Format.Format_ARGB32_Premultiplied
    )


@dataclass
class LayerSettings:
    enabled: bool = True
    visible: bool = True
    opacity: float = 0.8
    weight: float = 1.0
    start: float = 0.0
    end: float = 1.0
    controlnet: str = ""  # "" = the base model's own ControlNet for this kind


class ControlLayer(QObject):
    changed = Signal()  # pixels or settings

    def __init__(self, kind: str | ControlKind, size: QSize) -> None:
        super().__init__()
        self.info: ControlKind = kind if isinstance(kind, ControlKind) else get_kind(kind)
        self.kind = self.info.name
        self.image = blank(size)
        self.settings = LayerSettings(enabled=True, opacity=self.info.opacity)
        self.people: list[Person] = []  # pose layer: editable skeletons, drawn over `image`
        self._version = 0  # bumped on every change; keys the cached control map
        self._spec_cache: tuple[tuple, ControlSpec | None] | None = None
        self._display_cache: tuple[int, QImage] | None = None
        # The map the pixels were set from (a restored PNG's), keyed by the image's cacheKey, which any stroke,
        # clear or undo changes: while they are untouched, capture sends that map exactly. Going through the
        # 512 px layer and back would resample it, and a restored file would no longer reproduce its picture.
        self._source: tuple[int, np.ndarray] | None = None
        self.changed.connect(self._bump)

    def _bump(self) -> None:
        self._version += 1

    def render_pose_image(self) -> QImage:
        """The pose layer as shown and sent: fixed pose image plus the skeletons in OpenPose colours."""
        if not self.people:
            return self.image
        w, h = self.image.width(), self.image.height()
        rgb = render_pose(self.people, w, h)
        mask = rgb.any(axis=2)
        overlay = rgb_to_qimage_argb(rgb, np.where(mask, 255, 0).astype(np.uint8))
        out = self.image.copy()
        p = QPainter(out)
        p.drawImage(0, 0, overlay)
        p.end()
        return out

    def display_image(self) -> QImage:
        """What the canvas shows; the pose layer's rendering is cached until the layer changes (paint events are hot)."""
        if self.info.editor != "pose":
            return self.image
        if self._display_cache is None or self._display_cache[0] != self._version:
            self._display_cache = (self._version, self.render_pose_image())
        return self._display_cache[1]

    def set_pixels(self, image: QImage, people: list[Person], source: np.ndarray | None) -> None:
        """New pixels (and skeletons), with the map they were made from if any; emits `changed`."""
        self.image, self.people = image, people
        self._source = (image.cacheKey(), source) if source is not None else None
        self.changed.emit()

    def source(self) -> np.ndarray | None:
        """The map the layer was set from, while its pixels are untouched."""
        if self._source is None or self.people or self._source[0] != self.image.cacheKey():
            return None
        return self._source[1]

    def source_at(self, width: int, height: int) -> np.ndarray | None:
        source = self.source()
        return source if source is not None and source.shape[:2] == (height, width) else None

    def coverage_at(self, width: int, height: int) -> np.ndarray | None:
        """A mask-like layer (the Mask, a region) at output size, HxW with white = covered; None if nothing is.
        The exact map it was set from while its pixels are untouched (a restored file's), else its alpha resampled."""
        source = self.source_at(width, height)
        if source is not None and source.any():
            return source.max(axis=2)
        alpha = qimage_to_rgba(self.image)[..., 3]
        if not alpha.any():
            return None
        return cv2.resize(alpha, (width, height), interpolation=cv2.INTER_AREA) if alpha.shape != (height, width) else alpha

    def control_image(self, width: int, height: int, rgba: np.ndarray | None = None) -> np.ndarray:
        """The engine's convention at output size (the kind's map_from_layer)."""
        source = self.source_at(width, height)
        if source is not None:
            return source.copy()
        rgb = self.info.map_from_layer(qimage_to_rgba(self.display_image()) if rgba is None else rgba)
        if rgb.shape[:2] != (height, width):
            interp = cv2.INTER_AREA if rgb.shape[1] > width else cv2.INTER_LINEAR
            rgb = cv2.resize(rgb, (width, height), interpolation=interp)
        return rgb

    def to_spec(self, width: int, height: int) -> ControlSpec | None:
        """The layer as a request control, or None when it holds nothing.

        Cached until the layer changes: in live mode only the layer being drawn on is converted again.
        """
        key = (self._version, width, height, dataclasses.astuple(self.settings))
        if self._spec_cache is not None and self._spec_cache[0] == key:
            return self._spec_cache[1]
        rgba = qimage_to_rgba(self.display_image())
        spec = None
        if self.people or rgba[..., 3].any():
            s = self.settings
            spec = ControlSpec(self.kind, self.control_image(width, height, rgba), s.weight, s.start, s.end, s.controlnet or None)
        self._spec_cache = (key, spec)
        return spec


class ImageEdit(QUndoCommand):
    """One stroke, clear or load on one layer: the layer's pixels before and after.

    A stroke passes `rect`, the rectangle it touched: only those pixels are kept (a stroke on a 4096² layer keeps
    a few hundred KB, not two 64 MB copies), so undo stays bounded by the strokes' size, not the document's."""

    def __init__(self, layer: ControlLayer, before: QImage, after: QImage, text: str,
                 people_before: list[Person] | None = None, people_after: list[Person] | None = None,
                 source_after: np.ndarray | None = None, source_before: np.ndarray | None = None,
                 rect: QRect | None = None) -> None:  # fmt: skip
        super().__init__(text)
        self.layer, self.rect = layer, rect
        self.before, self.after = (before, after) if rect is None else (before.copy(rect), after.copy(rect))
        self.people_before = [p.copy() for p in (people_before if people_before is not None else layer.people)]
        self.people_after = [p.copy() for p in (people_after if people_after is not None else layer.people)]
        # the exact maps (ControlLayer.source) of the pixels before and after: they travel with undo/redo
        self.source_before, self.source_after = source_before, source_after
        self._painted = rect is not None  # a stroke is already on the layer when it is pushed

    def _put(self, pixels: QImage, people: list[Person], source: np.ndarray | None) -> None:
        if self.rect is None:
            self.layer.set_pixels(pixels.copy(), [p.copy() for p in people], source)
            return
        image = self.layer.image.copy()
        p = QPainter(image)
        p.setCompositionMode(QPainter.CompositionMode.CompositionMode_Source)
        p.drawImage(self.rect.topLeft(), pixels)
        p.end()
        self.layer.set_pixels(image, [q.copy() for q in people], source)

    def redo(self) -> None:
        if self._painted:  # the first redo, on push: the stroke's pixels are there already
            self._painted = False
            self.layer.set_pixels(self.layer.image, self.layer.people, self.source_after)
            return
        self._put(self.after, self.people_after, self.source_after)

    def undo(self) -> None:
        self._put(self.before, self.people_before, self.source_before)

    def cost(self) -> int:
        """Bytes held."""
        return self.before.sizeInBytes() + self.after.sizeInBytes()


class Document(QObject):
    changed = Signal(str)  # layer kind: pixels or settings
    layer_settings_changed = Signal(str, object, str)  # kind, frozenset of changed field names, origin
    regions_changed = Signal()  # a region added, deleted, moved or its prompt changed (gui/regions.py)
    references_changed = Signal()  # a reference added, deleted, or its picture or settings changed (gui/references.py)

    def __init__(self, size: QSize | None = None) -> None:
        super().__init__()
        self.size = QSize(size) if size is not None else QSize(512, 512)
        self.undo_stack = QUndoStack(self)
        self.layers: dict[str, ControlLayer] = {k: ControlLayer(k, self.size) for k in layer_kinds()}
        self.edit_layers: dict[str, ControlLayer] = {k: ControlLayer(info, self.size) for k, info in EDIT_LAYERS.items()}
        self.regions: dict[str, ControlLayer] = {}  # RegionLayers by key, bottom first (gui/regions.py)
        self.region_serial = 0  # keys never repeat, so undo and autosave can name a region
        self.references: list = []  # ReferenceLayers, in order (gui/references.py): pictures, not painted layers
        self.reference_serial = 0
        for kind, layer in self.all_layers().items():
            layer.changed.connect(lambda k=kind: self.changed.emit(k))

    def all_layers(self) -> dict[str, ControlLayer]:
        """Control layers, the editing layers (image, mask) and the regions, by name."""
        return {**self.edit_layers, **self.layers, **self.regions}

    def layer(self, name: str) -> ControlLayer:
        for group in (self.layers, self.edit_layers, self.regions):
            if name in group:
                return group[name]
        raise KeyError(name)

    def edit_image(self, width: int, height: int) -> np.ndarray | None:
        """The Image layer as an RGB picture at output size (transparent shows as the paper), or None if empty."""
        source = self.edit_layers["image"].source_at(width, height)  # a result put here by Edit this, or restored
        if source is not None:
            return source.copy()
        rgba = qimage_to_rgba(self.edit_layers["image"].image)
        if not rgba[..., 3].any():
            return None
        a = rgba[..., 3:4].astype(np.float32) / 255.0
        rgb = (rgba[..., :3] * a + np.array(PAPER_RGB, np.float32) * (1 - a)).round().astype(np.uint8)
        return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA) if rgb.shape[:2] != (height, width) else rgb

    def edit_mask(self, width: int, height: int) -> np.ndarray | None:
        """The Mask layer at output size (white = repaint), or None if nothing is masked."""
        return self.edit_layers["mask"].coverage_at(width, height)

    def invert_mask(self) -> None:
        alpha = qimage_to_rgba(self.edit_layers["mask"].image)[..., 3]
        self.set_layer_from_map("mask", np.repeat((255 - alpha)[..., None], 3, axis=2), None, "Invert mask")

    def is_empty(self) -> bool:
        """Nothing painted, loaded or posed on any layer, and no regions or references."""
        if self.regions or self.references:
            return False
        return not any(layer.people or qimage_to_rgba(layer.image)[..., 3].any() for layer in self.all_layers().values())

    def pose_layer(self) -> ControlLayer:
        """The layer the pose editor works on."""
        return next(layer for layer in self.layers.values() if layer.info.editor == "pose")

    def rect(self) -> QRect:
        return QRect(0, 0, self.size.width(), self.size.height())

    def set_layer_image(self, kind: str, image: QImage, text: str, people: list[Person] | None = None,
                        source: np.ndarray | None = None) -> None:  # fmt: skip
        """Replace a layer's pixels (and skeletons) undoably; `source`: the map they were made from."""
        layer = self.layer(kind)
        img = image.convertToFormat(QImage.Format.Format_ARGB32_Premultiplied)
        if img.size() != self.size:
            from PySide6.QtCore import Qt

            img = img.scaled(self.size, Qt.AspectRatioMode.IgnoreAspectRatio, Qt.TransformationMode.SmoothTransformation)
        self.undo_stack.push(ImageEdit(layer, layer.image.copy(), img, text, layer.people,
                                       people if people is not None else [], source, layer.source()))  # fmt: skip

    def set_layer_from_map(self, kind: str, rgb: np.ndarray, people: list[Person] | None, text: str) -> None:
        """A map in the engine's convention → the layer as the person sees it (undoable).

        Detected skeletons stay editable, so a pose layer then keeps them instead of the picture (not kept twice).
        """
        layer = self.layer(kind)
        rgba = np.zeros(rgb.shape[:2] + (4,), np.uint8) if people is not None else layer.info.layer_from_map(rgb)
        # a skeleton is rendered again, the same at the same size: only pixel maps are kept as they came
        source = rgb.copy() if people is None else None
        self.set_layer_image(kind, rgb_to_qimage_argb(rgba[..., :3], rgba[..., 3]), text, people, source)

    def set_layer_settings(self, kind: str, origin: str = "user", **changes: object) -> frozenset[str]:
        """Change a layer's settings; emits layer_settings_changed with the fields that really changed."""
        layer = self.layer(kind)
        before = dataclasses.asdict(layer.settings)
        layer.settings = dataclasses.replace(layer.settings, **changes)
        names = frozenset(k for k, v in dataclasses.asdict(layer.settings).items() if before[k] != v)
        if names:
            layer.changed.emit()
            self.layer_settings_changed.emit(kind, names, origin)
        return names

    def restore_layer_settings(self, kind: str, saved: object) -> None:
        """A layer's settings as a file kept them: known fields only (other versions may hold more or fewer)."""
        if isinstance(saved, dict):
            known = LayerSettings.__dataclass_fields__
            self.set_layer_settings(kind, "restore", **{k: v for k, v in saved.items() if k in known})

    def clear_layer(self, kind: str) -> None:
        self.set_layer_image(kind, blank(self.size), f"Clear {self.layer(kind).info.title.lower()}")

    def resize(self, size: QSize) -> None:
        """Scale every layer to a new document size (when the output size changes). Not undoable."""
        from PySide6.QtCore import Qt

        if size == self.size:
            return
        sx, sy = size.width() / self.size.width(), size.height() / self.size.height()
        self.size = QSize(size)
        for layer in self.all_layers().values():
            layer.image = layer.image.scaled(
                size, Qt.AspectRatioMode.IgnoreAspectRatio, Qt.TransformationMode.SmoothTransformation
            )
            layer.people = [
                Person([None if q is None else (q[0] * sx, q[1] * sy) for q in p.keypoints], p.hidden) for p in layer.people
            ]
        self.undo_stack.clear()
        for layer in self.all_layers().values():
            layer.changed.emit()

    def active_specs(self, width: int, height: int) -> tuple[ControlSpec, ...]:
        specs = (layer.to_spec(width, height) for layer in self.layers.values() if layer.settings.enabled)
        return tuple(s for s in specs if s is not None)
