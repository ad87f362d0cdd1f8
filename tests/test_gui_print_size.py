"""Print size in the window: the document at the picture's full size, strokes that undo by their rectangle, a
foreign project's own shape, and Upscale & refine with its tiles landing on the canvas one by one."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from fake_backend import FakeBackend
from helpers import open_window
from PySide6.QtCore import QPoint, Qt
from PySide6.QtTest import QTest
from test_tiling import ShiftBackend

from noisebrush.engine.engine import Engine
from noisebrush.engine.events import Finished
from noisebrush.engine.tiling import default_overlap, plan_tiles
from noisebrush.gui.document import qimage_to_rgba


def stroke(w, layer: str, y: float = 0.5) -> None:
    w.layers_panel.set_active(layer)
    rect = w.canvas.doc_rect_on_screen()
    a = QPoint(int(rect.left() + 0.3 * rect.width()), int(rect.top() + y * rect.height()))
    b = QPoint(int(rect.left() + 0.6 * rect.width()), int(rect.top() + y * rect.height()))
    QTest.mousePress(w.canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, a)
    QTest.mouseMove(w.canvas, b)
    QTest.mouseRelease(w.canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, b)


def photo(h: int, w: int) -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (h, w, 3), np.uint8)


@pytest.fixture
def window(qtbot, tmp_path):
    w = open_window(qtbot, tmp_path, Engine(FakeBackend(step_s=0.001)))
    yield w
    w.close()


def test_painting_on_a_1024_picture_keeps_every_untouched_pixel(window):
    w = window
    w.state.update(width=1024, height=1024, mode="refine")
    assert (w.doc.size.width(), w.doc.size.height()) == (1024, 1024)  # the document is the picture, not 512 px
    pic = photo(1024, 1024)
    w.doc.set_layer_from_map("image", pic, None, "Load picture")
    w.brush_size_box.setValue(12)
    stroke(w, "image")
    init = w.state.capture_request().init_image
    assert init.shape == (1024, 1024, 3)
    changed = np.any(init != pic, axis=2)
    assert 0 < changed.mean() < 0.05  # the stroke, and only the stroke
    ys, xs = np.nonzero(changed)
    assert ys.max() - ys.min() < 40  # a horizontal line 12 px wide: the rest of the picture is the original, exactly


def test_a_stroke_on_a_4096_layer_undoes_by_its_rectangle(window):
    w = window
    w.state.update(width=4096, height=4096)
    w.brush_size_box.setValue(40)
    before = qimage_to_rgba(w.doc.layers["scribble"].image).copy()
    stroke(w, "scribble")
    command = w.doc.undo_stack.command(w.doc.undo_stack.count() - 1)
    assert command.cost() < 2**20 * 4  # a 1230×48 px rectangle twice, not two 64 MB layers
    after = qimage_to_rgba(w.doc.layers["scribble"].image).copy()
    assert after[..., 3].any()
    w.doc.undo_stack.undo()
    assert np.array_equal(qimage_to_rgba(w.doc.layers["scribble"].image), before)
    w.doc.undo_stack.redo()
    assert np.array_equal(qimage_to_rgba(w.doc.layers["scribble"].image), after)


def test_a_foreign_project_opens_in_its_own_shape(window, qtbot, tmp_path):
    from noisebrush.engine.ora import OraLayer, Project, write_ora

    rgba = np.dstack([photo(384, 640), np.full((384, 640), 255, np.uint8)])
    write_ora(tmp_path / "other.ora", Project(640, 384, [OraLayer("Background", rgba)]))
    with qtbot.waitSignal(window.projects.opened, timeout=10000):
        window.projects.open(str(tmp_path / "other.ora"))
    assert (window.doc.size.width(), window.doc.size.height()) == (640, 384)
    assert np.array_equal(window.doc.edit_image(640, 384), rgba[..., :3])  # not stretched to a square


def test_upscale_and_refine_paints_tiles_in_place_then_edit_this_grows_the_document(qtbot, tmp_path):
    backend = ShiftBackend(step_s=0.01)
    w = open_window(qtbot, tmp_path, Engine(backend))
    try:
        w.state.update(width=128, height=128, steps=4, seed_locked=True, seed=9)
        with qtbot.waitSignal(w.bridge.finished, timeout=10000):
            w.generate()
        boxes = []
        w.bridge.preview.connect(lambda job, step, total, img, el, box: boxes.append(box))
        ranges = []
        w.jobs.progress.connect(lambda step, total, left: ranges.append((step, total)))
        with qtbot.waitSignal(w.bridge.finished, timeout=20000) as got:
            assert w.jobs.upscale(4.0, "", 0.5) is not None, w.banner.label.text()
        ev: Finished = got.args[1]
        assert ev.image.shape == (512, 512, 3) and ev.params.tiling is not None
        tiles = plan_tiles(512, 512, 128, default_overlap(128))
        assert {b for b in boxes if b} == {t.box for t in tiles}  # every 128 px tile landed in its place
        assert ranges[-1][0] == ranges[-1][1] == len(tiles) * 2  # one progress bar over tiles × steps
        assert w.state.history[0] is ev
        w.edit_result_action.trigger()
        assert (w.state.settings.width, w.state.settings.height) == (512, 512)
        assert (w.doc.size.width(), w.doc.size.height()) == (512, 512)
        assert np.array_equal(w.doc.edit_image(512, 512), ev.image)
    finally:
        w.close()


def test_the_bridge_shows_every_tile_even_when_the_gui_is_slow(qtbot):
    from noisebrush.engine.events import Preview
    from noisebrush.gui.engine_bridge import EngineBridge

    with Engine(FakeBackend()) as eng:
        bridge = EngineBridge(eng)
        got = []
        bridge.preview.connect(lambda job, step, total, img, el, box: got.append((step, box)))
        frame = np.zeros((8, 8, 3), np.uint8)

        def engine_thread() -> None:  # five frames before the GUI thread gets to run once
            for step, box in [(1, (0, 0, 8, 8)), (2, (8, 0, 8, 8)), (3, (0, 0, 8, 8)), (4, None), (5, None)]:
                bridge._on_event(Preview(1, step, 9, frame, 0.0, box))

        t = threading.Thread(target=engine_thread)
        t.start()
        t.join()
        qtbot.waitUntil(lambda: len(got) == 3)
    assert got == [(3, (0, 0, 8, 8)), (2, (8, 0, 8, 8)), (5, None)]  # the latest per place; whole frames replace


def test_the_upscale_dialog_offers_the_tile_controlnet_the_person_has(window, qtbot):
    from noisebrush.engine.backends.base import ModelInfo
    from noisebrush.gui.upscale_dialog import UpscaleDialog

    window.state.models = [*window.state.models,
                           ModelInfo("/m/controlnet-union-promax", "controlnet-union-promax", "controlnet", "sd15"),
                           ModelInfo("/m/control_v11f1e_sd15_tile", "SD1.5 tile", "controlnet", "sd15", "tile"),
                           ModelInfo("/m/xl_tile", "SDXL tile", "controlnet", "sdxl", "tile")]  # fmt: skip
    dialog = UpscaleDialog(window.state, 128, window)
    offered = [dialog.tile_net.itemText(i) for i in range(dialog.tile_net.count())]
    assert offered == ["None", "SD1.5 tile", "controlnet-union-promax"]  # the other family's is not offered
    window.state.update(width=128, height=128, steps=2)
    with qtbot.waitSignal(window.bridge.finished, timeout=10000):
        window.generate()
    req = window.state.capture_upscale(*dialog.choice())
    assert req.tiling is not None and req.tiling.controlnet == "/m/control_v11f1e_sd15_tile"  # preselected
    dialog.close()
