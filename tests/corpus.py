"""A corpus of bad and odd input files, built at test time (no binaries in the repo).

Each case says what a person must see: "ok" (it opens, perhaps with a note) or "error" (one clear line; nothing
changes). `via` says how the CLI takes it: as a control map (`--control KIND=PATH`) or as `--init`.
"""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin


@dataclass(frozen=True)
class Case:
    name: str
    path: Path
    expect: str  # "ok" | "error"
    kind: str = "scribble"  # the layer / --control kind it is offered as
    cli: str = ""  # the CLI's expectation where it differs: a PNG with hostile settings is a fine control map


def _png(path: Path, image: np.ndarray, **text: str) -> Path:
    info = PngImagePlugin.PngInfo()
    for k, v in text.items():
        info.add_text(k, v, zip=k == "noisebrush")
    Image.fromarray(image).save(path, pnginfo=info)
    return path


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _huge_header_png(path: Path, side: int) -> Path:
    """A PNG that claims side×side pixels in a few hundred bytes (a decompression bomb's header)."""
    raw = zlib.compress(b"\x00" * 1024)
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", raw) + _chunk(b"IEND", b""))
    return path


def _ztxt_bomb(path: Path) -> Path:
    """A valid 8×8 PNG with a zTXt chunk that inflates to 200 MB."""
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, format="PNG")
    png = buf.getvalue()
    bomb = _chunk(b"zTXt", b"noisebrush\x00\x00" + zlib.compress(b"{" * 200_000_000, 9))
    path.write_bytes(png[:-12] + bomb + png[-12:])
    return path


def lines(size: int = 64) -> np.ndarray:
    img = np.zeros((size, size, 3), np.uint8)
    img[size // 2 - 1 : size // 2 + 1, 4:-4] = 255
    return img


def build(folder: Path) -> list[Case]:
    folder.mkdir(parents=True, exist_ok=True)
    f = folder
    cases: list[Case] = []

    def add(name: str, path: Path, expect: str, kind: str = "scribble", cli: str = "") -> None:
        cases.append(Case(name, path, expect, kind, cli or expect))

    (f / "zero.png").write_bytes(b"")
    add("zero-byte", f / "zero.png", "error")
    good = _png(f / "good.png", lines())
    (f / "truncated.png").write_bytes(good.read_bytes()[:60])
    add("truncated PNG", f / "truncated.png", "error")
    buf = io.BytesIO()
    Image.fromarray(lines()).save(buf, format="JPEG")
    (f / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
    add("truncated JPEG", f / "truncated.jpg", "error")
    (f / "text.png").write_text("this is not a picture\n")
    add("text named .png", f / "text.png", "error")
    Image.fromarray(np.full((64, 64), 40000, np.uint16)).save(f / "16bit.png")
    add("16-bit grey", f / "16bit.png", "ok", "depth")
    Image.fromarray(lines()).convert("CMYK").save(f / "cmyk.jpg")
    add("CMYK JPEG", f / "cmyk.jpg", "ok")
    pal = Image.fromarray(lines()).convert("P")
    pal.info["transparency"] = 0
    pal.save(f / "palette-alpha.png")
    add("palette with alpha", f / "palette-alpha.png", "ok")
    Image.new("RGB", (1, 1), (255, 255, 255)).save(f / "one-pixel.png")
    add("1×1", f / "one-pixel.png", "ok")
    add("20000² bomb header", _huge_header_png(f / "bomb.png", 20000), "error")
    add("zTXt bomb", _ztxt_bomb(f / "ztxt-bomb.png"), "error")
    (f / "a folder.png").mkdir()
    add("a directory", f / "a folder.png", "error")
    loop = f / "loop.png"
    os.symlink(loop, loop)
    add("symlink loop", loop, "error")
    os.mkfifo(f / "fifo.png")
    add("FIFO", f / "fifo.png", "error")
    spaced = f / "a sketch with spaces – ünïcødé.png"
    _png(spaced, lines())
    add("spaces and non-ASCII in the path", spaced, "ok")
    exif = Image.fromarray(lines(64)[:, :48].copy())
    exif_info = exif.getexif()
    exif_info[0x0112] = 6  # "rotate 90° to view"
    exif.save(f / "exif-rotated.jpg", exif=exif_info)
    add("EXIF-rotated JPEG", f / "exif-rotated.jpg", "ok")
    frames = [Image.fromarray(lines()), Image.fromarray(255 - lines())]
    frames[0].save(f / "animated.gif", save_all=True, append_images=frames[1:])
    add("animated GIF", f / "animated.gif", "ok")
    body = {"prompt": "x", "steps": 20, "guidance": 5, "width": 64, "height": 64}
    for name, payload in [("top-level list", "[1, 2]"), ("deep nesting", "[" * 50_000 + "]" * 50_000),
                          ("integer prompt", json.dumps(body | {"prompt": 7})),
                          ("non-image base64", json.dumps(body | {"init_image": "aGVsbG8="})),
                          ("NaN weight", json.dumps(body | {"controls": [{"kind": "depth", "weight": float("nan"),
                                                                           "start": 0, "end": 1, "image": ""}]}))]:  # fmt: skip
        path = _png(f / f"settings-{name.replace(' ', '-')}.png", lines(), noisebrush=payload)
        add(f"settings: {name}", path, "error", cli="ok")
    add("A1111: Seed: abc", _png(f / "a1111-seed.png", lines(), parameters="x\nSteps: 20, Seed: abc, Size: 64x64"), "error",
        cli="ok")  # fmt: skip
    add("A1111: 1 MB line", _png(f / "a1111-long.png", lines(), parameters="a" * 1_000_000 + "\nSteps: 20"), "error",
        cli="ok")  # fmt: skip
    person = [100.0, 100.0, 1.0] * 18
    for name, value in [("null", None), ("NaN", float("nan")), ("inf", float("inf")), ("1e12", 1e12)]:
        bad = list(person)
        bad[3] = value
        path = f / f"pose-{name}.json"
        path.write_text(json.dumps({"canvas_width": 512, "canvas_height": 512, "people": [{"pose_keypoints_2d": bad}]}))
        add(f"pose JSON with {name}", path, "error", "pose")
    body25 = [v for i in range(25) for v in (900.0 + 5 * i, 200.0 + 30 * i, 0.8)]
    (f / "body25.json").write_text(json.dumps({"version": 1.3, "people": [{"pose_keypoints_2d": body25}]}))
    add("OpenPose BODY_25, no canvas size", f / "body25.json", "ok", "pose")
    return cases
