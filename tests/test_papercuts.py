"""The first hour's papercuts (issue 20), each at its cause: wheel, open, view toggles, cancel, samplers, saving, pen."""

from __future__ import annotations

import os
import stat

import cv2
import numpy as np
import pytest
from helpers import circle_sketch
from PIL import Image
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QPointingDevice, QTabletEvent, QWheelEvent
from PySide6.QtWidgets import QApplication

from noisebrush.engine.controls import guess_kind
from noisebrush.engine.pose import default_person, render_pose


@pytest.fixture
def window(fake_window):
    return fake_window


def wheel(widget, dy: int = -120) -> bool:
    pos = QPointF(widget.width() / 2, widget.height() / 2)
    ev = QWheelEvent(pos, widget.mapToGlobal(pos), QPoint(0, 0), QPoint(0, dy), Qt.MouseButton.NoButton,
                     Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)  # fmt: skip
    QApplication.sendEvent(widget, ev)
    return ev.isAccepted()


def test_the_wheel_over_an_unfocused_slider_scrolls_the_panel_and_changes_nothing(window, qtbot):
    w = window
    w.state.update(live=True)
    qtbot.waitUntil(lambda: w.job is None and len(w.backend.requests) == 1, timeout=10000)
    box = w.layers_panel.boxes["depth"]
    for slider in (box.weight, box.opacity, w.panel.steps):
        before = slider.value()
        wheel(slider)
        assert slider.value() == before
    qtbot.wait(150)
    assert len(w.backend.requests) == 1  # nothing started a frame
    box.weight.setFocus()
    qtbot.waitUntil(box.weight.hasFocus, timeout=2000)
    wheel(box.weight)
    assert box.weight.value() != 100  # focused, it takes the wheel


@pytest.mark.parametrize("picture, kind", [
    ("lines", "scribble"), ("gradient", "depth"), ("pose", "pose"),
])  # fmt: skip
def test_opening_a_plain_picture_puts_it_into_the_layer_it_looks_like_and_says_so(window, qtbot, tmp_path, picture, kind):
    w = window
    if picture == "lines":
        image = circle_sketch(128)
    elif picture == "gradient":
        image = np.repeat(np.tile(np.linspace(30, 220, 128, dtype=np.uint8), (128, 1))[..., None], 3, axis=2)
        image = cv2.GaussianBlur(image, (9, 9), 0)
    else:
        image = render_pose([default_person(64, 64, 110)], 128, 128)
    assert guess_kind(image)[0] == kind
    path = tmp_path / f"{picture}.png"
    Image.fromarray(image).save(path)
    w.layers_panel.set_active("depth" if kind != "depth" else "scribble")  # the active layer is not where it goes
    with qtbot.waitSignal(w.files.files_read, timeout=10000):  # a PNG is first read for settings, on a worker
        w.open_files([str(path)])
    assert w.doc.layers[kind].to_spec(64, 64) is not None
    assert w.layers_panel.boxes[kind].active.isChecked()
    assert f"went to the {w.doc.layers[kind].info.title} layer" in w.statusBar().currentMessage()


def test_result_only_sketch_only_and_the_flip(window):
    w = window
    w.result_only_action.trigger()
    assert w.canvas.view == "result" and not w.sketch_only_action.isChecked()
    w.flip_view_action.trigger()
    assert w.canvas.view == "sketch" and w.sketch_only_action.isChecked() and not w.result_only_action.isChecked()
    w.sketch_only_action.trigger()
    assert w.canvas.view == "both"


def test_cancel_shows_the_last_good_result_and_a_success_clears_the_error(window, qtbot):
    w = window
    w.state.update(steps=2, seed_locked=True)
    with qtbot.waitSignal(w.bridge.finished, timeout=10000):
        w.generate()
    good = w.canvas.result
    w.show_error("something failed earlier")
    w.state.update(steps=200)
    with qtbot.waitSignal(w.bridge.preview, timeout=10000):
        w.generate()
    with qtbot.waitSignal(w.bridge.cancelled, timeout=10000):
        w.cancel()
    assert w.canvas.result == good and not w.canvas.result_is_preview
    assert w.panel.progress.format() == "idle"  # no stale "about 8 s left"
    assert w.banner.isVisible()
    w.state.update(steps=2)
    with qtbot.waitSignal(w.bridge.finished, timeout=10000):
        w.generate()
    assert not w.banner.isVisible()


def test_lcm_is_offered_only_for_lcm_models(window, tmp_path):
    w = window
    names = [w.panel.scheduler.itemText(i) for i in range(w.panel.scheduler.count())]
    assert "LCM" not in names and "DPM++ 2M" in names
    lcm = tmp_path / "my-lcm"
    (lcm / "scheduler").mkdir(parents=True)
    (lcm / "unet").mkdir()
    (lcm / "model_index.json").write_text("{}")
    (lcm / "scheduler" / "scheduler_config.json").write_text('{"_class_name": "LCMScheduler"}')
    (lcm / "unet" / "config.json").write_text('{"cross_attention_dim": 768}')
    w.files.use_model(str(lcm))
    assert w.panel.scheduler.currentText() == "LCM" and w.state.settings.steps == 4


def test_saves_are_readable_by_others_remember_their_folder_and_do_not_collide(window, qtbot, tmp_path, monkeypatch):
    from noisebrush.gui import files

    w = window
    w.state.update(steps=2, seed_locked=True, seed=3)
    with qtbot.waitSignal(w.bridge.finished, timeout=10000):
        w.generate()
    out = tmp_path / "pictures"
    out.mkdir()
    offered = []

    def fake_dialog(_parent, _title, suggested, _filter):  # the person picks `out` once, then takes what is offered
        offered.append(suggested)
        return str(out / os.path.basename(suggested)) if len(offered) == 1 else suggested, "PNG (*.png)"

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(files.QFileDialog, "getSaveFileName", fake_dialog)
    old = os.umask(0o022)
    try:
        w.files.save_dialog()
        w.files.save_dialog()
    finally:
        os.umask(old)
    first, second = offered
    assert first == str(tmp_path / "noisebrush-3.png")
    assert second == str(out / "noisebrush-3-2.png")  # the folder of the last save, and a name that is free
    mode = stat.S_IMODE((out / "noisebrush-3.png").stat().st_mode)
    assert mode == 0o644


def test_a_pen_on_the_pose_layer_is_left_to_the_mouse_events_that_drag_joints(window):
    w = window
    w.layers_panel.set_active("pose")
    pos = QPointF(w.canvas.width() / 2, w.canvas.height() / 2)
    ev = QTabletEvent(QTabletEvent.Type.TabletPress, QPointingDevice.primaryPointingDevice(), pos, w.canvas.mapToGlobal(pos),
                      0.5, 0.0, 0.0, 0.0, 0.0, 0.0, Qt.KeyboardModifier.NoModifier, Qt.MouseButton.LeftButton,
                      Qt.MouseButton.LeftButton)  # fmt: skip
    QApplication.sendEvent(w.canvas, ev)
    assert not ev.isAccepted()  # ignored: Qt makes the mouse press that picks the joint
    w.layers_panel.set_active("scribble")
    QApplication.sendEvent(w.canvas, ev)
    assert ev.isAccepted()  # on an ink layer the pen paints, with pressure


def test_the_window_has_its_icon_and_fixed_width_undo_labels(window, qtbot):
    w = window
    assert not w.windowIcon().isNull()
    w.doc.clear_layer("scribble")
    assert w.undo_action.text() == "Undo" and "Clear scribble" in w.undo_action.toolTip()


def test_the_app_logs_to_a_rotating_file_with_crash_stacks(tmp_path):
    import faulthandler
    import logging
    import sys

    from noisebrush.gui.app import start_log

    hook, handlers = sys.excepthook, list(logging.getLogger().handlers)
    try:
        start_log(tmp_path / "logs" / "noisebrush.log")
        logging.getLogger("noisebrush.engine").error("job 3 failed: out of memory")
        assert faulthandler.is_enabled()
    finally:
        faulthandler.enable()  # back to stderr, as pytest had it
        for h in logging.getLogger().handlers[len(handlers) :]:
            h.close()
            logging.getLogger().removeHandler(h)
        sys.excepthook = hook
    assert "job 3 failed: out of memory" in (tmp_path / "logs" / "noisebrush.log").read_text()
