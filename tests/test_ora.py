"""OpenRaster projects: the spec's structure (so Krita, GIMP and MyPaint open them), and every layer back."""

from __future__ import annotations

import xml.etree.ElementTree as ET
import zipfile

import numpy as np
import pytest
from PIL import Image

from noisebrush.engine.errors import UserError
from noisebrush.engine.ora import MIMETYPE, OraLayer, Project, read_ora, write_ora


def check_openraster_structure(path) -> None:
    """What the OpenRaster spec requires of a file."""
    with zipfile.ZipFile(path) as z:
        first = z.infolist()[0]
        assert first.filename == "mimetype" and first.compress_type == zipfile.ZIP_STORED
        assert z.read("mimetype") == MIMETYPE.encode("ascii")
        stack = ET.fromstring(z.read("stack.xml"))
        assert stack.tag == "image" and int(stack.get("w")) > 0 and int(stack.get("h")) > 0
        assert stack.find("stack") is not None
        for layer in stack.iter("layer"):
            assert layer.get("src") in z.namelist() and layer.get("src").startswith("data/")
            assert layer.get("visibility") in ("visible", "hidden") and 0 <= float(layer.get("opacity")) <= 1
        with Image.open(z.open("Thumbnails/thumbnail.png")) as thumb:
            assert max(thumb.size) <= 256
        with Image.open(z.open("mergedimage.png")) as merged:
            assert merged.size == (int(stack.get("w")), int(stack.get("h")))


def test_a_project_round_trips_every_layer_and_meets_the_spec(tmp_path):
    rng = np.random.default_rng(0)
    layers = [OraLayer(n, rng.integers(0, 256, (48, 80, 4), dtype=np.uint8), v, o)
              for n, v, o in (("Image", True, 1.0), ("Scribble", True, 0.8), ("Mask", False, 0.45))]  # fmt: skip
    path = write_ora(tmp_path / "p.ora", Project(80, 48, layers, {"settings": {"prompt": "x"}}))
    check_openraster_structure(path)
    back = read_ora(path)
    assert (back.width, back.height, back.data) == (80, 48, {"settings": {"prompt": "x"}})
    assert [(b.name, b.visible, round(b.opacity, 3)) for b in back.layers] == [(a.name, a.visible, a.opacity) for a in layers]
    assert all(np.array_equal(a.rgba, b.rgba) for a, b in zip(layers, back.layers))


def test_cli_out_ora_writes_a_layered_project(tiny_model, tmp_path):
    from helpers import circle_sketch

    from noisebrush.cli import main
    from noisebrush.engine.metadata import request_from_json

    Image.fromarray(circle_sketch(64)).save(tmp_path / "s.png")
    out = tmp_path / "result.ora"
    assert main(["generate", "--prompt", "x", "--model", tiny_model, "--steps", "2", "--width", "64", "--height", "64",
                 "--seed", "3", "--control", f"scribble={tmp_path / 's.png'}", "--out", str(out)]) == 0  # fmt: skip
    check_openraster_structure(out)
    project = read_ora(out)
    assert [layer.name for layer in project.layers] == ["Result", "scribble map"]
    assert request_from_json(project.data["request"]).seed == 3


@pytest.mark.parametrize("content", [b"not a zip", "no-mimetype"])
def test_a_file_that_is_not_openraster_is_a_clear_error(tmp_path, content):
    path = tmp_path / "bad.ora"
    if content == "no-mimetype":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("stack.xml", "<image/>")
    else:
        path.write_bytes(content)
    with pytest.raises(UserError, match="bad.ora"):
        read_ora(path)
