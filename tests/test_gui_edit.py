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


def test_a_saved_png_reopens_in_a_fresh_window_with_every_layer_and_setting(window, qtbot, tmp_path):
    from noisebrush.engine.pose import default_person

    w = window
    w.state.update(steps=2, seed_locked=True, seed=11, prompt="keep me", guidance=6.5, scheduler="Euler a")
    paint(w, "scribble", 0.3)
    paint(w, "depth", 0.6)
    w.canvas.edit_people([default_person(256, 256, 300)], "Add person")
    w.doc.set_layer_settings("depth", weight=0.6, start=0.1, end=0.8)
    run(w, qtbot)
    w.edit_result_action.trigger()
    w.state.update(mode="inpaint", feather=3, strength=0.9)
    paint(w, "mask", 0.5)
    done = run(w, qtbot)
    path = tmp_path / "saved.png"
    assert w.save_result(str(path))
    expected = {k: layer.to_spec(64, 64) for k, layer in w.doc.layers.items()}
    people = [p.keypoints for p in w.doc.pose_layer().people]

    fresh = open_window(qtbot, tmp_path / "fresh", model=w.state.settings.model, preview_interval_s=0.0)
    try:
        with qtbot.waitSignal(fresh.files.files_read, timeout=10000):
            fresh.open_files([str(path)])
        s = fresh.state.settings
        assert (s.prompt, s.steps, s.guidance, s.seed, s.scheduler, s.mode, s.feather, s.strength) == (
            "keep me", 2, 6.5, 11, "Euler a", "inpaint", 3, 0.9)  # fmt: skip
        for kind, spec in expected.items():
            got = fresh.doc.layers[kind].to_spec(64, 64)
            assert (got is None) == (spec is None), kind
            if spec is not None:
                assert (got.weight, got.start, got.end) == (spec.weight, spec.start, spec.end), kind
                assert np.abs(got.image.astype(int) - spec.image).mean() < 2, kind  # resampled to the sketch and back
        assert [p.keypoints for p in fresh.doc.pose_layer().people] == people  # an editable skeleton, not a picture
        # the picture and the mask: resampled to the sketch's 512 px and back, so close rather than equal
        assert np.abs(fresh.doc.edit_image(64, 64).astype(int) - done.params.init_image).mean() < 5
        assert np.abs(fresh.doc.edit_mask(64, 64).astype(int) - done.params.mask).mean() < 5
        assert fresh.capture_request().mode == "inpaint"
    finally:
        fresh.close()


def test_a_project_saves_every_layer_and_reopens_in_a_fresh_window(window, qtbot, tmp_path):
    from test_ora import check_openraster_structure

    from noisebrush.engine.pose import default_person
    from noisebrush.gui.document import qimage_to_rgba

    w = window
    w.state.update(steps=2, seed_locked=True, seed=5, prompt="a project")
    paint(w, "scribble", 0.3)
    w.canvas.edit_people([default_person(256, 256, 300)], "Add person")
    run(w, qtbot)
    w.edit_result_action.trigger()
    paint(w, "mask", 0.7)
    w.doc.set_layer_settings("depth", weight=0.4, visible=False)
    path = tmp_path / "p.ora"
    assert w.projects.save(str(path))
    check_openraster_structure(path)
    fresh = open_window(qtbot, tmp_path / "fresh", model=w.state.settings.model, preview_interval_s=0.0)
    try:
        with qtbot.waitSignal(fresh.projects.opened, timeout=10000):
            fresh.open_files([str(path)])
        assert fresh.state.settings.prompt == "a project" and fresh.state.settings.seed == 5
        for kind, layer in w.doc.all_layers().items():
            other = fresh.doc.layer(kind)
            assert np.array_equal(qimage_to_rgba(other.image), qimage_to_rgba(layer.image)), kind
            assert other.settings == layer.settings, kind
        assert [p.keypoints for p in fresh.doc.pose_layer().people] == [p.keypoints for p in w.doc.pose_layer().people]
        assert fresh.canvas.result is not None  # the result came back as the picture shown
        fresh.undo_action.trigger()  # one undo step takes the whole project back out
        assert qimage_to_rgba(fresh.doc.layers["scribble"].image)[..., 3].max() == 0
    finally:
        fresh.close()


def test_shift_drag_on_the_mask_makes_a_rectangle(window):
    w = window
    w.layers_panel.set_active("mask")
    rect = w.canvas.doc_rect_on_screen()
    a = QPoint(int(rect.left() + 0.25 * rect.width()), int(rect.top() + 0.25 * rect.height()))
    b = QPoint(int(rect.left() + 0.75 * rect.width()), int(rect.top() + 0.5 * rect.height()))
    QTest.mousePress(w.canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.ShiftModifier, a)
    QTest.mouseMove(w.canvas, b)
    QTest.mouseRelease(w.canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.ShiftModifier, b)
    mask = w.doc.edit_mask(64, 64)
    assert mask[20:30, 18:46].min() == 255 and mask[40:, :].max() == 0 and mask[:, :12].max() == 0
    w.undo_action.trigger()
    assert w.doc.edit_mask(64, 64) is None


def test_paste_puts_a_picture_into_the_image_layer_and_the_brush_paints_its_colour(window):
    from PySide6.QtGui import QColor, QImage
    from PySide6.QtWidgets import QApplication

    w = window
    picture = QImage(64, 64, QImage.Format.Format_RGB32)
    picture.fill(QColor(10, 200, 30))
    QApplication.clipboard().setImage(picture)
    w.paste_picture()
    assert tuple(w.doc.edit_image(64, 64)[32, 32]) == (10, 200, 30)
    w.canvas.paint_color = QColor(0, 0, 255)
    w.brush_size_box.setValue(40)
    paint(w, "image", 0.5)
    assert tuple(w.doc.edit_image(64, 64)[32, 32]) == (0, 0, 255)
