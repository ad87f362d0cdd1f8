"""The one registry of control kinds: what each kind's map is, how a layer becomes a map and back, how it is edited.

Request validation, the document, the canvas, the layer panels, the model catalog, the preprocessors, the CLI and
the metadata all iterate over `CONTROL_KINDS`. Adding a kind is one `register(ControlKind(...))` call.

Layers are RGBA (straight alpha) arrays drawn as a person sees them; maps are HxWx3 uint8 arrays in the
ControlNet's convention. No Qt here: the GUI converts its QImages to and from these arrays.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from noisebrush.engine.errors import UserError

INK_RGB = (25, 25, 30)  # the colour of ink on the paper: lines show dark, the model gets them white on black


def ink_to_map(rgba: np.ndarray) -> np.ndarray:
    """Ink coverage → white lines on black (the person draws dark lines on light paper)."""
    return np.repeat(rgba[..., 3:4], 3, axis=2).copy()


def map_to_ink(rgb: np.ndarray) -> np.ndarray:
    """White lines on black → dark ink whose coverage is the line's brightness."""
    out = np.empty(rgb.shape[:2] + (4,), np.uint8)
    out[..., :3] = INK_RGB
    out[..., 3] = rgb.max(axis=2)
    return out


def colour_to_map(rgba: np.ndarray) -> np.ndarray:
    """Colours as drawn, over black: transparent is black (far, for depth; nobody, for pose)."""
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    return (rgba[..., :3].astype(np.float32) * alpha).astype(np.uint8)


def map_to_colour(rgb: np.ndarray) -> np.ndarray:
    return np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])


def map_to_sparse_colour(rgb: np.ndarray) -> np.ndarray:
    """Black is transparent: a pose map over the picture shows only its limbs."""
    return np.dstack([rgb, np.where(rgb.any(axis=2), 255, 0).astype(np.uint8)])


@dataclass(frozen=True)
class ControlKind:
    name: str  # the stable id in requests, files and the CLI
    title: str  # for panels and menus
    map_format: str  # what the ControlNet gets, for a tooltip and the CLI's help
    editor: str  # "ink" (brush and eraser), "grey" (soft grey brush), "pose" (skeleton editor), "image" (load only)
    name_words: tuple[str, ...]  # words in a ControlNet's file or folder name that say it is for this kind
    map_from_layer: Callable[[np.ndarray], np.ndarray]
    layer_from_map: Callable[[np.ndarray], np.ndarray]
    preprocessors: tuple[str, ...] = ()  # names in noisebrush.engine.preprocess.PREPROCESSORS
    paint_order: int = 0  # lower is painted first, under the others
    accepts_pose_json: bool = False
    opacity: float = 0.8  # the layer's default opacity over the picture
    layer: bool = True  # False: no layer to paint; the engine makes the map (tile: the picture itself, per tile)


CONTROL_KINDS: dict[str, ControlKind] = {}


def register(kind: ControlKind) -> ControlKind:
    CONTROL_KINDS[kind.name] = kind
    return kind


def unregister(name: str) -> None:
    """For tests that register a kind of their own."""
    CONTROL_KINDS.pop(name, None)


def get_kind(name: str) -> ControlKind:
    try:
        return CONTROL_KINDS[name]
    except KeyError:
        raise UserError(f"unknown control kind {name!r}; use one of {', '.join(CONTROL_KINDS)}") from None


def kind_names() -> tuple[str, ...]:
    return tuple(CONTROL_KINDS)


def layer_kinds() -> tuple[str, ...]:
    """The kinds a document has a layer for."""
    return tuple(k for k, info in CONTROL_KINDS.items() if info.layer)


def paint_order() -> list[str]:
    return sorted(layer_kinds(), key=lambda k: CONTROL_KINDS[k].paint_order)


def kind_from_name(name: str) -> str | None:
    """The kind a ControlNet's file or folder name names, or None ("control_v11p_sd15_canny" → "canny")."""
    low = name.lower()
    for kind in CONTROL_KINDS.values():
        if any(w in low for w in kind.name_words):
            return kind.name
    return None


for _kind in (
    ControlKind("scribble", "Scribble", "white strokes on black", "ink", ("scribble", "sketch", "hed", "softedge"),
                ink_to_map, map_to_ink, ("canny", "lineart"), paint_order=30),
    ControlKind("depth", "Depth", "a depth map, near = bright", "grey", ("depth",),
                colour_to_map, map_to_colour, ("depth_anything",), paint_order=10),
    ControlKind("pose", "Pose", "an OpenPose body map (COCO-18 colours)", "pose", ("pose", "openpose"),
                colour_to_map, map_to_sparse_colour, ("openpose",), paint_order=20, accepts_pose_json=True),
    ControlKind("canny", "Canny edges", "thin white Canny edges on black", "ink", ("canny",),
                ink_to_map, map_to_ink, ("canny",), paint_order=40),
    ControlKind("lineart", "Line art", "white line art on black", "ink", ("lineart", "line_art", "line-art"),
                ink_to_map, map_to_ink, ("lineart",), paint_order=50),
    ControlKind("tile", "Tile", "the picture itself: a tile ControlNet keeps a refined tile faithful to it", "image",
                ("tile",), colour_to_map, map_to_colour, layer=False),
):  # fmt: skip
    register(_kind)


def guess_kind(rgb: np.ndarray) -> tuple[str, str]:
    """Which layer a plain picture most likely is, and why in a few words (for "Open" on an image with no settings).

    OpenPose maps are coloured limbs on black; scribbles are lines, nearly only black and white; depth maps are
    smooth greys.
    """
    px = rgb.reshape(-1, 3).astype(np.int16)
    value = px.max(axis=1)
    saturation = value - px.min(axis=1)
    dark = value < 24
    lit = ~dark
    if dark.mean() > 0.5 and lit.any() and (saturation[lit] > 80).mean() > 0.5:
        return "pose", "coloured limbs on black, like an OpenPose map"
    extreme = (value < 40) | (value > 215)
    if extreme.mean() > 0.9 and (saturation < 40).mean() > 0.95:
        return "scribble", "black and white lines"
    return "depth", "smooth greys, like a depth map"
