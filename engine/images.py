"""Reading user images into the engine's conventions, with a clear message for every bad case."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from noisebrush.engine.controls import get_kind
from noisebrush.engine.errors import UserError
from noisebrush.engine.pose import load_pose_json, render_pose

# Above this a decode costs seconds and hundreds of MB: almost surely a mistake for a control map.
MAX_PIXELS = 64_000_000
# Pillow stops at 1 MB of decompressed text per PNG chunk; Noisebrush's own settings JSON (maps and init image as
# PNG) passes that from about 512 px with a noisy init. Read up to 64 MiB per chunk; Pillow's 64 MiB cap on all
# text in a file stays, so a text bomb still fails (as a ValueError).
PngImagePlugin.MAX_TEXT_CHUNK = max(PngImagePlugin.MAX_TEXT_CHUNK, 64 * 2**20)


@dataclass
class LoadedImage:
    image: np.ndarray  # HxWx3 uint8 RGB
    notes: list[str] = field(default_factory=list)  # what was converted, for the user


def _to_rgb8(img: Image.Image, name: str, notes: list[str]) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        notes.append(f"{name}: {mode} image scaled to 8 bits")
        gray = arr.round().astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        # Transparent areas become black: "nothing here" in every control convention.
        rgba = img.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        notes.append(f"{name}: transparency flattened onto black")
        return np.asarray(Image.alpha_composite(black, rgba).convert("RGB"))
    if mode != "RGB":
        if mode not in ("L", "1"):
            notes.append(f"{name}: {mode} image converted to RGB")
        img = img.convert("RGB")
    return np.asarray(img)


def regular_file(path: Path) -> None:
    """Only regular files are opened: a FIFO or a device would block the reader for ever."""
    import stat

    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(mode):
        raise UserError(f"{path}: is a folder, not a file")
    if not stat.S_ISREG(mode):
        raise UserError(f"{path.name}: not a regular file (a pipe or a device); not opened")


def read_image(path: str | Path) -> LoadedImage:
    """Any image file → RGB uint8. Raises UserError for missing, unreadable, truncated or huge files."""
    path = Path(path)
    regular_file(path)
    return decode_image(path, path.name)


def decode_image(source: Path | BinaryIO, name: str) -> LoadedImage:
    """An image file or stream (a server's answer) → RGB uint8, with the same limits and one-line errors."""
    notes: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise UserError(f"{name}: {img.width}×{img.height} is too large (limit {MAX_PIXELS // 1_000_000} MP)")
                frames = getattr(img, "n_frames", 1)
                if frames > 1:
                    notes.append(f"{name}: the first of its {frames} frames was used")
                img.load()
                upright = ImageOps.exif_transpose(img)  # phones store photos sideways plus an EXIF turn
                if upright is not img and upright.size != img.size:
                    notes.append(f"{name}: turned upright as its EXIF orientation says")
                arr = _to_rgb8(upright, name, notes)
    except UserError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UserError(f"{name}: the image is too large to open safely") from None
    except UnidentifiedImageError:
        raise UserError(f"{name}: not an image file (or a format Noisebrush cannot read)") from None
    except (OSError, ValueError, SyntaxError) as exc:  # ValueError: a text-chunk bomb; SyntaxError: a broken header
        raise UserError(f"{name}: cannot read the image ({exc}); the file may be truncated or damaged") from None
    return LoadedImage(np.ascontiguousarray(arr), notes)


def fit_to(image: np.ndarray, width: int, height: int, name: str, notes: list[str]) -> np.ndarray:
    """Resize to (width, height) when needed, and say so. Control maps must match the output size."""
    h, w = image.shape[:2]
    if (w, h) == (width, height):
        return image
    notes.append(f"{name}: resized from {w}×{h} to {width}×{height}")
    interp = cv2.INTER_AREA if w > width or h > height else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interp)


def load_control_image(kind: str, path: str | Path, width: int, height: int) -> LoadedImage:
    """A control map from a file, at output size. A pose may come as OpenPose JSON."""
    path = Path(path)
    if get_kind(kind).accepts_pose_json and path.suffix.lower() == ".json":
        notes: list[str] = []
        try:
            people = load_pose_json(path, width, height, notes)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        except OSError as exc:
            raise UserError(f"{path.name}: cannot read pose JSON ({exc})") from None
        return LoadedImage(render_pose(people, width, height), [f"{path.name}: {len(people)} pose(s) rendered", *notes])
    loaded = read_image(path)
    loaded.image = fit_to(loaded.image, width, height, path.name, loaded.notes)
    return loaded


def round_size(value: int, notes: list[str], what: str) -> int:
    """Round a size to the nearest multiple of 8 (at least 8), noting the change."""
    rounded = max(8, int(round(value / 8.0)) * 8)
    if rounded != value:
        notes.append(f"{what} {value} rounded to {rounded} (a multiple of 8)")
    return rounded
