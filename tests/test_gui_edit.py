"""Editing in the window: Edit this, Refine, Inpaint through a painted mask, Extend, on the real engine."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import open_window
from PySide6.QtCore import QPoint, Qt
from PySide6.QtTest import QTest


@pytest.fixture
def window(qtbot, tmp_path, tiny_model):
    w = open_window(qtbot, tmp_path, model=tiny_model, preview_interval_s=0.0)
    yield w
    w.close()


def paint(w, layer: str, y: float) -> None:
    w.layers_panel.set_active(layer)
    rect = w.canvas.doc_rect_on_screen()
    a = QPoint(int(rect.left() + 0.2 * rect.width()), int(rect.top() + y * rect.height()))
    b = QPoint(int(rect.left() + 0.8 * rect.width()), int(rect.top() + y * rect.height()))
    QTest.mousePress(w.canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, a)
    QTest.mouseMove(w.canvas, b)
    QTest.mouseRelease(w.canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, b)


def run(w, qtbot):
    with qtbot.waitSignal(w.bridge.finished, timeout=60000) as got:
        assert w.generate() is not None, w.banner.label.text()
    return got.args[1]


def test_edit_this_then_refine_inpaint_and_extend(window, qtbot):
    w = window
    w.state.update(steps=3, seed_locked=True, seed=4)
    first = run(w, qtbot)
    w.edit_result_action.trigger()
    assert w.state.settings.mode == "refine" and w.doc.edit_image(64, 64) is not None
    refined = run(w, qtbot)
    assert refined.params.mode == "img2img" and refined.params.strength == 0.5
    assert not np.array_equal(refined.image, first.image)
    w.state.update(mode="inpaint", feather=0, strength=1.0)
    w.brush_size_box.setValue(60)
    paint(w, "mask", 0.5)
    inpainted = run(w, qtbot)
    req = inpainted.params
    assert req.mode == "inpaint" and req.mask is not None and 0 < (req.mask > 0).mean() < 1
    keep = req.mask == 0
    assert np.array_equal(inpainted.image[keep], req.init_image[keep])  # untouched outside the mask, exactly
    before = w.doc.edit_image(64, 64)
    w.edit_result_action.trigger()  # accept the inpainted one…
    assert not np.array_equal(w.doc.edit_image(64, 64), before)
    w.undo_action.trigger()
    w.undo_action.trigger()  # …and undo brings the old picture (and its mask) back
    assert np.array_equal(w.doc.edit_image(64, 64), before) and w.doc.edit_mask(64, 64) is not None
    w.edit_result_action.trigger()
    w.state.update(mode="extend", extend_px=32, extend_sides="lr")
    wide = run(w, qtbot)
    assert wide.image.shape == (64, 128, 3)
    w.edit_result_action.trigger()  # the wider picture becomes the canvas
    assert (w.state.settings.width, w.state.settings.height) == (128, 64) and w.doc.edit_image(128, 64) is not None


def test_refine_with_an_empty_image_layer_says_what_to_do(window):
    window.state.update(mode="refine")
    assert window.generate() is None
    assert "Image layer is empty" in window.banner.label.text()
