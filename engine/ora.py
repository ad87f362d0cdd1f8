"""OpenRaster (.ora) projects: the open layered format Krita, GIMP and MyPaint read.

A zip whose first entry is `mimetype` (stored, uncompressed: "image/openraster"), then `stack.xml` (top layer
first), one PNG per layer under `data/`, `Thumbnails/thumbnail.png` (at most 256 px) and `mergedimage.png`.
Noisebrush keeps its own settings in `noisebrush/project.json` inside the zip; other programs ignore it.
"""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from noisebrush.engine.atomic import atomic_file
from noisebrush.engine.errors import UserError

MIMETYPE = "image/openraster"
PROJECT_FILE = "noisebrush/project.json"
MAX_ORA_BYTES = 512 * 2**20  # uncompressed total: a zip bomb is refused
MAX_LAYERS = 64


@dataclass
class OraLayer:
    name: str
    rgba: np.ndarray  # HxWx4 uint8, straight alpha
    visible: bool = True
    opacity: float = 1.0


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
    out = np.zeros((project.height, project.width, 3), np.float32)
    for layer in project.layers:
        if layer.visible:
            a = layer.rgba[..., 3:4].astype(np.float32) / 255.0 * layer.opacity
            out = out * (1 - a) + layer.rgba[..., :3].astype(np.float32) * a
    return out.round().astype(np.uint8)


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


def read_ora(path: str | Path) -> Project:
    """Every layer of an OpenRaster file (ours or Krita's), and Noisebrush's settings when it holds them."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            if not names or names[0] != "mimetype" or z.read("mimetype").decode("ascii", "replace").strip() != MIMETYPE:
                raise UserError(f"{path.name}: not an OpenRaster file (no image/openraster mimetype first)")
            if sum(i.file_size for i in z.infolist()) > MAX_ORA_BYTES:
                raise UserError(f"{path.name}: unpacks to more than {MAX_ORA_BYTES >> 20} MB; not opened")
            image = ET.fromstring(z.read("stack.xml"))
            width, height = int(image.get("w", "0")), int(image.get("h", "0"))
            if not (0 < width <= 8192 and 0 < height <= 8192):
                raise UserError(f"{path.name}: a canvas of {width}×{height} px is not one Noisebrush opens")
            entries = image.findall(".//layer")[:MAX_LAYERS]
            layers = []
            for entry in reversed(entries):  # bottom first
                src = entry.get("src", "")
                if src not in names:
                    raise UserError(f"{path.name}: the layer {entry.get('name')!r} names a missing file {src!r}")
                with Image.open(io.BytesIO(z.read(src))) as img:
                    rgba = np.asarray(img.convert("RGBA"))
                canvas = np.zeros((height, width, 4), np.uint8)
                x, y = int(float(entry.get("x", "0"))), int(float(entry.get("y", "0")))
                h, w = rgba.shape[:2]
                x0, y0, x1, y1 = max(0, x), max(0, y), min(width, x + w), min(height, y + h)
                if x1 > x0 and y1 > y0:
                    canvas[y0:y1, x0:x1] = rgba[y0 - y : y1 - y, x0 - x : x1 - x]
                layers.append(OraLayer(entry.get("name", "layer"), canvas, entry.get("visibility", "visible") != "hidden",
                                       float(entry.get("opacity", "1"))))  # fmt: skip
            data = json.loads(z.read(PROJECT_FILE)) if PROJECT_FILE in names else {}
    except UserError:
        raise
    except (OSError, zipfile.BadZipFile, ET.ParseError, ValueError, KeyError, json.JSONDecodeError) as exc:
        raise UserError(f"{path.name}: cannot read the project ({exc})") from None
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
