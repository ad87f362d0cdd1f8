"""OpenRaster files from other apps (Krita-shaped: cropped layers with offsets, a nested group, Krita's own layer
names, no Noisebrush data) open with every layer, and hostile ones give one sentence that names the file."""

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from noisebrush.engine.errors import UserError
from noisebrush.engine.ora import MIMETYPE, read_ora


def _png(rgba: np.ndarray | Image.Image) -> bytes:
    buf = io.BytesIO()
    (rgba if isinstance(rgba, Image.Image) else Image.fromarray(rgba)).save(buf, format="PNG")
    return buf.getvalue()


def _solid(w: int, h: int, rgba: tuple) -> np.ndarray:
    return np.tile(np.array(rgba, np.uint8), (h, w, 1))


def krita_file(path, *, layers: dict[str, bytes], stack: str, w: int = 64, h: int = 48) -> str:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(zipfile.ZipInfo("mimetype"), MIMETYPE, compress_type=zipfile.ZIP_STORED)
        z.writestr("stack.xml", f'<?xml version="1.0"?><image w="{w}" h="{h}" version="0.0.1"><stack>{stack}</stack></image>')
        for src, data in layers.items():
            z.writestr(src, data)
        z.writestr("mergedimage.png", _png(_solid(w, h, (0, 0, 0, 255))))
    return str(path)


@pytest.fixture
def krita_project(tmp_path) -> str:
    """Background (opaque white), Paint Layer 1 (a red 20×10 patch at 10,5, opacity 0.5) and, in a hidden group at
    opacity 0.5, a Depth layer at opacity 0.8: what Krita writes for a file it made or re-saved."""
    return krita_file(tmp_path / "from-krita.ora", layers={
        "data/bg.png": _png(_solid(64, 48, (255, 255, 255, 255))),
        "data/paint.png": _png(_solid(20, 10, (255, 0, 0, 255))),
        "data/depth.png": _png(_solid(64, 48, (128, 128, 128, 255))),
    }, stack='<layer name="Paint Layer 1" src="data/paint.png" x="10" y="5" opacity="0.5" visibility="visible"/>'
             '<stack name="Group 1" visibility="hidden" opacity="0.5">'
             '<layer name="Depth" src="data/depth.png" x="0" y="0" opacity="0.8" visibility="visible"/></stack>'
             '<layer name="Background" src="data/bg.png" x="0" y="0" opacity="1" visibility="visible"/>')  # fmt: skip


def test_groups_offsets_visibility_and_opacity_are_read(krita_project):
    project = read_ora(krita_project)
    by_name = {layer.name: layer for layer in project.layers}
    assert [layer.name for layer in project.layers] == ["Background", "Depth", "Paint Layer 1"]  # bottom first
    assert by_name["Depth"].visible is False and by_name["Depth"].opacity == pytest.approx(0.4)  # the group's too
    paint = by_name["Paint Layer 1"].rgba
    assert paint[5:15, 10:30, 3].min() == 255 and paint[..., 3].sum() == 255 * 200  # placed at its offset
    assert project.data == {}


def test_a_krita_file_opens_every_layer_and_says_it_has_no_noisebrush_settings(fake_window, krita_project, qtbot):
    from noisebrush.gui.document import qimage_to_rgba

    w = fake_window
    prompt = w.state.settings.prompt
    with qtbot.waitSignal(w.projects.opened, timeout=10000):
        w.projects.open(krita_project)
    text = w.banner.label.text()
    assert w.banner.isVisible() and "from-krita.ora" in text
    assert "no Noisebrush settings" in text and '"Paint Layer 1"' in text and '"Background"' in text
    assert "Image layer" in text
    depth = w.state.doc.layers["depth"]
    assert depth.settings.visible is False and depth.settings.opacity == pytest.approx(0.4)
    assert qimage_to_rgba(depth.image)[..., :3].mean() == pytest.approx(128, abs=2)  # its pixels came in
    image = qimage_to_rgba(w.state.doc.edit_layers["image"].image).astype(int)
    h, wd = image.shape[:2]
    inside = image[int(h * 0.2), int(wd * 0.3), :3]  # in the red patch, blended at 0.5 over white
    outside = image[int(h * 0.8), int(wd * 0.8), :3]
    assert abs(inside[0] - 255) <= 3 and abs(inside[1] - 128) <= 4 and abs(outside - 255).max() <= 3
    assert w.state.settings.prompt == prompt  # settings untouched


def test_a_giant_layer_is_one_sentence_in_the_banner(fake_window, tmp_path, qtbot):
    giant = _png(Image.new("1", (20000, 10000)))
    path = krita_file(tmp_path / "giant.ora", layers={"data/big.png": giant},
                      stack='<layer name="Background" src="data/big.png" x="0" y="0"/>')  # fmt: skip
    with pytest.raises(UserError, match="20000×10000"):
        read_ora(path)
    w = fake_window
    with qtbot.waitSignal(w.projects.opened, timeout=10000):
        w.projects.open(path)
    text = w.banner.label.text()
    assert text.startswith("giant.ora: ") and "20000×10000" in text and "\n" not in text
    assert "Error" not in text and "Traceback" not in text


@pytest.mark.parametrize("what", ["xml", "png", "nest", "zip"])
def test_damaged_projects_are_one_sentence_naming_the_file(tmp_path, what):
    layer = '<layer name="A" src="data/a.png"/>'
    layers = {"data/a.png": _png(_solid(8, 8, (1, 2, 3, 255)))}
    if what == "xml":
        path = krita_file(tmp_path / "p.ora", layers=layers, stack="<layer name=")
    elif what == "png":
        path = krita_file(tmp_path / "p.ora", layers={"data/a.png": b"\x89PNG\r\n\x1a\nnot really"}, stack=layer)
    elif what == "nest":
        path = krita_file(tmp_path / "p.ora", layers=layers, stack="<stack>" * 40 + layer + "</stack>" * 40)
    else:
        path = tmp_path / "p.ora"
        path.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(UserError) as caught:
        read_ora(path)
    message = str(caught.value)
    assert message.startswith("p.ora: ") and "\n" not in message and "Error" not in message


def test_dropped_hostile_files_each_give_a_sentence_naming_them(fake_window, tmp_path, qtbot):
    """The drop path (the canvas's files_dropped) ends where File → Open does: one banner line per bad file."""
    giant = krita_file(tmp_path / "huge.ora", layers={"data/big.png": _png(Image.new("1", (20000, 10000)))},
                       stack='<layer name="Background" src="data/big.png" x="0" y="0"/>')  # fmt: skip
    junk = tmp_path / "holiday.png"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    w = fake_window
    for path, signal in ((giant, w.projects.opened), (str(junk), w.files.files_read)):
        w.banner.hide()
        with qtbot.waitSignal(signal, timeout=10000):
            w.canvas.files_dropped.emit([str(path)])
        text = w.banner.label.text()
        assert w.banner.isVisible() and text.startswith(Path(path).name) and "\n" not in text, text
        assert "Error" not in text and "0x" not in text, text


def krita_round_trip(src: str, dst: str) -> str:
    """What Krita 5 writes back for a project it opened: its own stack.xml attributes only (name, visibility,
    opacity, x, y, composite-op: kis_open_raster_stack_save_visitor.cpp), layers cropped to their content with x/y,
    its own file names, and no file it does not know (project.json is gone)."""
    import xml.etree.ElementTree as ET

    with zipfile.ZipFile(src) as z:
        stack = ET.fromstring(z.read("stack.xml"))
        out_stack = ET.Element("image", w=stack.get("w"), h=stack.get("h"), version="0.0.1")
        root = ET.SubElement(out_stack, "stack")
        files = {}
        for i, entry in enumerate(stack.iter("layer")):
            rgba = np.asarray(Image.open(io.BytesIO(z.read(entry.get("src")))).convert("RGBA"))
            ys, xs = np.nonzero(rgba[..., 3])
            if len(xs) == 0:
                continue  # Krita writes an empty layer as a 0-size PNG; leaving it out is the harsher test
            crop = rgba[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
            name = f"data/layer{i}.png"
            files[name] = _png(crop)
            ET.SubElement(root, "layer", {"name": entry.get("name"), "visibility": entry.get("visibility", "visible"),
                                          "opacity": entry.get("opacity", "1"), "x": str(xs.min()), "y": str(ys.min()),
                                          "composite-op": "svg:src-over", "src": name})  # fmt: skip
    with zipfile.ZipFile(dst, "w") as z:
        z.writestr(zipfile.ZipInfo("mimetype"), MIMETYPE, compress_type=zipfile.ZIP_STORED)
        z.writestr("stack.xml", ET.tostring(out_stack))
        for name, data in files.items():
            z.writestr(name, data)
    return dst


def test_noisebrush_settings_survive_a_round_trip_through_krita(qtbot, tmp_path):
    from fake_backend import FakeBackend
    from helpers import open_window
    from test_gui import stroke

    from noisebrush.engine.engine import Engine
    from noisebrush.gui.document import qimage_to_rgba

    a = open_window(qtbot, tmp_path / "a", Engine(FakeBackend(step_s=0.01)))
    try:
        a.state.update(prompt="a lighthouse at dusk", steps=33, seed=1234, seed_locked=True)
        stroke(a.canvas, [(0.2, 0.2), (0.8, 0.7)])
        a.doc.set_layer_settings("depth", "user", visible=False, weight=0.55)
        assert a.projects.save(str(tmp_path / "mine.ora"))
        sketch = qimage_to_rgba(a.doc.layers["scribble"].image)
    finally:
        a.close()
    back = krita_round_trip(str(tmp_path / "mine.ora"), str(tmp_path / "from-krita.ora"))
    assert "noisebrush/project.json" not in zipfile.ZipFile(back).namelist()
    b = open_window(qtbot, tmp_path / "b", Engine(FakeBackend(step_s=0.01)))
    try:
        with qtbot.waitSignal(b.projects.opened, timeout=10000):
            b.projects.open(back)
        s = b.state.settings
        assert (s.prompt, s.steps, s.seed) == ("a lighthouse at dusk", 33, 1234)
        depth = b.doc.layers["depth"].settings
        assert depth.visible is False and depth.weight == pytest.approx(0.55)
        assert np.array_equal(qimage_to_rgba(b.doc.layers["scribble"].image)[..., 3] > 0, sketch[..., 3] > 0)
        assert not b.banner.isVisible() or "no Noisebrush settings" not in b.banner.label.text()
        assert "keep hidden" not in b.banner.label.text()  # the carrier is not taken for a picture layer
    finally:
        b.close()
