"""OpenRaster (.ora) projects: the open layered format Krita, GIMP and MyPaint read.

A zip whose first entry is `mimetype` (stored, uncompressed: "image/openraster"), then `stack.xml` (top layer
first), one PNG per layer under `data/`, `Thumbnails/thumbnail.png` (at most 256 px) and `mergedimage.png`.
Noisebrush keeps its own settings in `noisebrush/project.json` inside the zip; other programs ignore it.
"""

from __future__ import annotations

import io
import json
import struct
import xml.etree.ElementTree as ET
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from noisebrush.engine.atomic import atomic_file
from noisebrush.engine.errors import UserError

MIMETYPE = "image/openraster"
PROJECT_FILE = "noisebrush/project.json"
# Krita (5.x) rewrites stack.xml with its own attributes only and drops files it does not know, so project.json is
# lost on a round trip; layer names and pixels survive. So the settings travel twice: in project.json, and packed
# into the pixels of a hidden layer of this name (alpha 255, so no app can premultiply or crop them away).
DATA_LAYER = "Noisebrush settings (keep hidden)"
DATA_MAGIC = b"NBS1"
MAX_ORA_BYTES = 512 * 2**20  # uncompressed total: a zip bomb is refused
MAX_LAYERS = 64
MAX_SIDE = 8192
MAX_SETTINGS_BYTES = 64 << 20


@dataclass
class OraLayer:
    name: str
    rgba: np.ndarray  # HxWx4 uint8, straight alpha
    visible: bool = True  # with every group around it visible, when read
    opacity: float = 1.0  # times every group's around it, when read


@dataclass
class Project:
    width: int
    height: int
    layers: list[OraLayer]  # bottom first (stack.xml lists them top first)
    data: dict = field(default_factory=dict)  # Noisebrush's own settings


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _merged(project: Project) -> np.ndarray:
    return composite(project.layers, project.width, project.height)[..., :3]


def composite(layers: list[OraLayer], width: int, height: int) -> np.ndarray:
    """The visible layers (bottom first) blended "over" with their opacity: HxWx4 uint8, straight alpha."""
    rgb = np.zeros((height, width, 3), np.float32)
    alpha = np.zeros((height, width, 1), np.float32)
    for layer in layers:
        if layer.visible:
            a = layer.rgba[..., 3:4].astype(np.float32) / 255.0 * layer.opacity
            rgb = rgb * alpha * (1 - a) + layer.rgba[..., :3].astype(np.float32) * a  # premultiplied
            alpha = alpha * (1 - a) + a
            rgb = np.divide(rgb, alpha, out=np.zeros_like(rgb), where=alpha > 0)
    return np.dstack([rgb, alpha * 255.0]).round().clip(0, 255).astype(np.uint8)


def write_ora(path: str | Path, project: Project) -> Path:
    """Write atomically: a failure never leaves half a project at `path`."""
    path = Path(path)
    stack = ET.Element("image", w=str(project.width), h=str(project.height), version="0.0.5")
    root = ET.SubElement(stack, "stack")
    files: list[tuple[str, bytes]] = []
    for i, layer in reversed(list(enumerate(project.layers))):  # top first
        src = f"data/layer{i:02d}.png"
        ET.SubElement(root, "layer", name=layer.name, src=src, x="0", y="0", opacity=f"{layer.opacity:.3f}",
                      visibility="visible" if layer.visible else "hidden")  # fmt: skip
        files.append((src, _png(layer.rgba)))
    packed = pack_settings(project.data, project.width, project.height) if project.data else None
    if packed is not None:  # on top, hidden, where Krita shows it as one more layer
        root.insert(0, ET.Element("layer", name=DATA_LAYER, src="data/settings.png", x="0", y="0", opacity="1.000",
                                  visibility="hidden"))  # fmt: skip
        files.append(("data/settings.png", _png(packed)))
    merged = _merged(project)
    thumb = Image.fromarray(merged)
    thumb.thumbnail((256, 256))
    if not (path.parent if str(path.parent) else Path(".")).is_dir():
        raise UserError(f"cannot write {path}: the folder {path.parent} does not exist")
    with atomic_file(path) as f, zipfile.ZipFile(f, "w") as z:
        z.writestr(zipfile.ZipInfo("mimetype"), MIMETYPE, compress_type=zipfile.ZIP_STORED)  # first, stored
        z.writestr("stack.xml", ET.tostring(stack, encoding="utf-8", xml_declaration=True), zipfile.ZIP_DEFLATED)
        for name, data in files:
            z.writestr(name, data, zipfile.ZIP_STORED)  # PNGs are compressed already
        z.writestr("Thumbnails/thumbnail.png", _png(np.asarray(thumb)), zipfile.ZIP_STORED)
        z.writestr("mergedimage.png", _png(merged), zipfile.ZIP_STORED)
        z.writestr(PROJECT_FILE, json.dumps(project.data), zipfile.ZIP_DEFLATED)
    return path


def pack_settings(data: dict, width: int, height: int) -> np.ndarray | None:
    """`data` as zlib'd JSON in the RGB bytes of an opaque strip at most width×height; None if it does not fit.
    Header: magic, the strip's width (2 bytes), the payload's length (4 bytes)."""
    payload = zlib.compress(json.dumps(data, separators=(",", ":")).encode(), 9)
    w = min(width, 256)
    raw = DATA_MAGIC + struct.pack(">HI", w, len(payload)) + payload
    rows = -(-len(raw) // (w * 3))
    if rows > height:
        return None
    rgb = np.frombuffer(raw.ljust(rows * w * 3, b"\0"), np.uint8).reshape(rows, w, 3)
    return np.dstack([rgb, np.full((rows, w), 255, np.uint8)])


def unpack_settings(rgba: np.ndarray) -> dict:
    """What pack_settings wrote, from the layer as placed on the canvas; {} when it is not there or is damaged
    (an app that painted on it): the file then opens as one with no Noisebrush settings."""
    if rgba.shape[1] < 4:
        return {}
    head = rgba[0, :4, :3].tobytes()
    if head[:4] != DATA_MAGIC:
        return {}
    w, n = struct.unpack(">HI", head[4:10])
    raw = rgba[:, :w, :3].tobytes()[10 : 10 + n]
    try:
        data = json.loads(zlib.decompressobj().decompress(raw, MAX_SETTINGS_BYTES))
    except (zlib.error, ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def _stack_layers(stack: ET.Element, visible: bool = True, opacity: float = 1.0, depth: int = 0):
    """(layer element, visible, opacity) top first, through nested groups (<stack> inside <stack>): a layer in a
    hidden group is hidden, and a group's opacity multiplies its layers' (how Krita writes groups)."""
    if depth > 32:
        raise UserError("groups nest more than 32 deep")
    for child in stack:
        shown = visible and child.get("visibility", "visible") != "hidden"
        alpha = opacity * min(1.0, max(0.0, float(child.get("opacity", "1"))))
        if child.tag == "stack":
            yield from _stack_layers(child, shown, alpha, depth + 1)
        elif child.tag == "layer":
            yield child, shown, alpha


def _layer_pixels(z: zipfile.ZipFile, entry: ET.Element, width: int, height: int) -> np.ndarray:
    """The layer's PNG placed at its x/y on a width×height canvas (other apps crop layers to their content)."""
    name, src = entry.get("name") or "layer", entry.get("src", "")
    data = z.read(src)
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:  # the size from IHDR, before Pillow's bomb check
        w, h = struct.unpack(">II", data[16:24])
        if w > MAX_SIDE or h > MAX_SIDE:
            raise UserError(f"the layer {name!r} is {w}×{h} px; Noisebrush opens layers up to {MAX_SIDE} px a side")
    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
            if w > MAX_SIDE or h > MAX_SIDE:
                raise UserError(f"the layer {name!r} is {w}×{h} px; Noisebrush opens layers up to {MAX_SIDE} px a side")
            rgba = np.asarray(img.convert("RGBA"))
    except (Image.DecompressionBombError, OSError, ValueError, SyntaxError):
        raise UserError(f"the layer {name!r} ({src}) is damaged, too large or not a picture") from None
    canvas = np.zeros((height, width, 4), np.uint8)
    x, y = int(float(entry.get("x", "0"))), int(float(entry.get("y", "0")))
    x0, y0, x1, y1 = max(0, x), max(0, y), min(width, x + w), min(height, y + h)
    if x1 > x0 and y1 > y0:
        canvas[y0:y1, x0:x1] = rgba[y0 - y : y1 - y, x0 - x : x1 - x]
    return canvas


def read_ora(path: str | Path) -> Project:
    """Every layer of an OpenRaster file (ours, Krita's, GIMP's), groups flattened with their visibility and
    opacity carried into their layers, and Noisebrush's settings when it holds them. UserError naming the file and
    what is wrong for anything else."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            if not names or names[0] != "mimetype" or z.read("mimetype").decode("ascii", "replace").strip() != MIMETYPE:
                raise UserError("not an OpenRaster file (no image/openraster mimetype first)")
            if sum(i.file_size for i in z.infolist()) > MAX_ORA_BYTES:
                raise UserError(f"unpacks to more than {MAX_ORA_BYTES >> 20} MB; not opened")
            if "stack.xml" not in names:
                raise UserError("it has no stack.xml, the list of its layers")
            image = ET.fromstring(z.read("stack.xml"))
            width, height = int(image.get("w", "0")), int(image.get("h", "0"))
            if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
                raise UserError(f"a canvas of {width}×{height} px is larger than Noisebrush opens ({MAX_SIDE} px a side)")
            root = image.find("stack")
            entries = list(_stack_layers(root if root is not None else image))[:MAX_LAYERS]
            layers, packed = [], {}
            for entry, visible, opacity in reversed(entries):  # bottom first
                if entry.get("src", "") not in names:
                    raise UserError(f"the layer {entry.get('name')!r} names a missing file {entry.get('src', '')!r}")
                pixels = _layer_pixels(z, entry, width, height)
                if entry.get("name") == DATA_LAYER:
                    packed = unpack_settings(pixels)
                    continue
                layers.append(OraLayer(entry.get("name") or "layer", pixels, visible, opacity))
            data = json.loads(z.read(PROJECT_FILE)) if PROJECT_FILE in names else packed
    except UserError as exc:
        raise UserError(f"{path.name}: {exc}") from None
    except (
        OSError,
        zipfile.BadZipFile,
        ET.ParseError,
        ValueError,
        KeyError,
        RecursionError,
        OverflowError,
        EOFError,
        zlib.error,
        RuntimeError,
        NotImplementedError,
    ) as exc:  # Runtime: encrypted; NotImplemented: a zip method
        reason = " ".join(str(exc).split())[:120]
        raise UserError(f"{path.name}: damaged or not an OpenRaster project ({reason})") from None
    return Project(width, height, layers, data if isinstance(data, dict) else {})


def _opaque(rgb: np.ndarray) -> np.ndarray:
    return np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])


def result_project(image: np.ndarray, req, model_name: str = "") -> Project:
    """A generated picture as a project: the result on top of the picture it edited, its control maps and mask as
    hidden layers, and the request (as in a Noisebrush PNG) to restore from."""
    from noisebrush.engine.metadata import request_to_json

    h, w = image.shape[:2]
    layers = []
    if req.init_image is not None:
        layers.append(OraLayer("Image", _opaque(req.init_image), visible=False))
    layers.append(OraLayer("Result", _opaque(image)))
    for c in req.controls:
        layers.append(OraLayer(f"{c.kind} map", _opaque(c.image), visible=False, opacity=0.8))
    if req.mask is not None:
        layers.append(OraLayer("Mask", _opaque(np.repeat(req.mask[..., None], 3, axis=2)), visible=False, opacity=0.5))
    return Project(w, h, layers, {"request": request_to_json(req), "model_name": model_name})
