"""The desktop app, driven as a person would (pytest-qt, offscreen), wired to a real engine on a tiny model."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import circle_sketch
from PIL import Image
from PySide6.QtCore import QPoint, QSettings, Qt
from PySide6.QtTest import QTest

from noisebrush.engine.metadata import save_png
from noisebrush.engine.request import ControlSpec, GenerationRequest
from noisebrush.gui.app import create_main_window
from noisebrush.gui.document import qimage_to_rgba


@pytest.fixture
def make_window(qtbot, tiny_model, tmp_path):
    windows = []

    def make(restore: str = "never", data_dir=None, **kw):
        settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
        w = create_main_window(model=tiny_model, settings=settings, data_dir=data_dir or tmp_path / "data",
                               preview_interval_s=0.0, restore=restore, **kw)  # fmt: skip
        qtbot.addWidget(w)
        w.resize(1100, 800)
        w.show()
        qtbot.waitExposed(w)
        windows.append(w)
        return w

    yield make
    for w in windows:
        w.close()
        assert not w.bridge.engine.is_alive()


def stroke(canvas, points: list[tuple[int, int]]) -> None:
    """A mouse stroke through doc-relative fractions of the canvas' paper."""
    rect = canvas.doc_rect_on_screen()
    pts = [QPoint(int(rect.left() + x * rect.width()), int(rect.top() + y * rect.height())) for x, y in points]
    QTest.mousePress(canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, pts[0])
    for p in pts[1:]:
        QTest.mouseMove(canvas, p)
    QTest.mouseRelease(canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, pts[-1])


def ink(window) -> np.ndarray:
    return qimage_to_rgba(window.doc.layers["scribble"].image)[..., 3]


def test_stroke_paints_the_scribble_layer_and_undo_restores_it(make_window):
    w = make_window()
    assert ink(w).max() == 0
    stroke(w.canvas, [(0.2, 0.2), (0.5, 0.5), (0.8, 0.3)])
    after = ink(w)
    assert after.max() == 255 and (after > 0).sum() > 500
    w.undo_action.trigger()
    assert ink(w).max() == 0
    w.redo_action.trigger()
    assert np.array_equal(ink(w), after)
    # the request gets white strokes on black, at output size
    spec = w.capture_request().controls[0]
    assert spec.kind == "scribble" and spec.image.shape == (64, 64, 3) and spec.image.max() > 200 and spec.image[0, 0].max() == 0


def test_generate_streams_previews_onto_the_canvas_and_lands_in_history(make_window, qtbot):
    w = make_window()
    w.panel.steps.setValue(6)
    stroke(w.canvas, [(0.3, 0.3), (0.7, 0.7)])
    shown = []
    w.bridge.preview.connect(lambda *a: shown.append(qimage_to_rgba(w.canvas.result).copy()))
    with qtbot.waitSignal(w.bridge.finished, timeout=60000):
        w.generate_action.trigger()
    assert len(shown) >= 2
    assert any(not np.array_equal(a, b) for a, b in zip(shown, shown[1:]))  # the picture changes step to step
    assert w.history.count() == 1
    assert w.canvas.result.size().width() == 64 and not w.canvas.result_is_preview
    assert "Done in" in w.statusBar().currentMessage()


def test_cancel_stops_the_job(make_window, qtbot):
    w = make_window()
    w.panel.steps.setValue(100)
    finished = []
    w.bridge.finished.connect(lambda *a: finished.append(a))
    with qtbot.waitSignal(w.bridge.preview, timeout=60000):
        w.generate()
    with qtbot.waitSignal(w.bridge.cancelled, timeout=10000) as blocker:
        QTest.keyClick(w, Qt.Key.Key_Escape)
    assert blocker.args[1] < 100
    assert not finished and w.job is None and not w.panel.cancel_btn.isEnabled()


def test_live_mode_two_quick_strokes_give_one_result_from_the_second(make_window, qtbot):
    w = make_window(live_debounce_ms=150)
    w.panel.steps.setValue(60)
    w.panel.live.setChecked(True)
    finished = []
    w.bridge.finished.connect(lambda job, ev: finished.append(ev))
    stroke(w.canvas, [(0.1, 0.5), (0.4, 0.5)])
    qtbot.waitSignal(w.bridge.started, timeout=10000).wait()  # the first stroke's frame is running
    stroke(w.canvas, [(0.6, 0.2), (0.6, 0.8)])
    expected = w.doc.layers["scribble"].control_image(64, 64)
    qtbot.waitUntil(lambda: len(finished) >= 1 and w.job is None, timeout=60000)
    qtbot.wait(300)
    assert len(finished) == 1
    assert np.array_equal(finished[0].params.controls[0].image, expected)


def test_live_mode_draws_while_a_long_stroke_goes_on(make_window, qtbot):
    """A stroke still being drawn gets frames (every LIVE_MAX_WAIT_S), each from the ink so far; its end one more."""
    from noisebrush.gui.jobs import LIVE_MAX_WAIT_S

    w = make_window(live_debounce_ms=150)
    w.panel.steps.setValue(2)
    with qtbot.waitSignal(w.bridge.finished, timeout=60000):  # switching live on makes a frame of the empty sketch
        w.panel.live.setChecked(True)
    started = []
    w.bridge.started.connect(started.append)
    rect = w.canvas.doc_rect_on_screen()
    at = lambda x: QPoint(int(rect.left() + x * rect.width()), int(rect.center().y()))  # noqa: E731
    QTest.mousePress(w.canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, at(0.1))
    for i in range(1, 13):
        QTest.mouseMove(w.canvas, at(0.1 + 0.06 * i))
        qtbot.wait(int(LIVE_MAX_WAIT_S * 1000 / 4))
    assert started, "no frame started while the stroke went on"
    mid = w.doc.layers["scribble"].control_image(64, 64)
    QTest.mouseRelease(w.canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, at(0.82))
    finished = []
    w.bridge.finished.connect(lambda job, ev: finished.append(ev))
    qtbot.waitUntil(lambda: bool(finished) and w.job is None, timeout=60000)
    assert len(started) >= 2  # during the stroke, and after it
    assert np.array_equal(finished[-1].params.controls[0].image, w.doc.layers["scribble"].control_image(64, 64))
    assert mid.sum() > 0


def test_live_mode_starts_a_waiting_change_as_soon_as_a_frame_finishes(make_window, qtbot):
    """Frames back to back while the sketch keeps changing: a change that came during a frame does not wait for the
    debounce once the engine is free."""
    import time

    w = make_window(live_debounce_ms=3000)
    w.panel.steps.setValue(2)
    with qtbot.waitSignal(w.bridge.finished, timeout=60000):
        w.panel.live.setChecked(True)
        w.jobs.live.fire.emit()  # the first frame now, not after 3 s
    started, finished = [], []
    w.bridge.started.connect(lambda job: started.append((job, time.perf_counter())))
    w.bridge.finished.connect(lambda job, ev: finished.append((ev, time.perf_counter())))
    stroke(w.canvas, [(0.2, 0.5), (0.5, 0.5)])  # waits 3 s for its frame…
    w.jobs.live.fire.emit()  # …unless one starts now (as the deadline would start it during a long stroke)
    stroke(w.canvas, [(0.5, 0.2), (0.5, 0.8)])  # a change while that frame runs
    qtbot.waitUntil(lambda: len(finished) >= 2, timeout=60000)
    assert finished[1][1] - finished[0][1] < 2.0  # the second frame did not wait out the 3 s debounce
    assert np.array_equal(finished[1][0].params.controls[0].image, w.doc.layers["scribble"].control_image(64, 64))


def test_sliders_reach_the_request(make_window):
    w = make_window()
    p = w.panel
    p.steps.setValue(7)
    p.guidance.setValue(7)  # half-steps → 3.5
    p.seed.setValue(4242)
    p.seed_lock.setChecked(True)
    p.scheduler.setCurrentText("Euler a")
    p.prompt.setPlainText("a green star")
    p.negative.setText("blurry")
    stroke(w.canvas, [(0.3, 0.3), (0.6, 0.6)])
    box = w.layers_panel.boxes["scribble"]
    box.weight.setValue(65)
    box.start.setValue(10)
    box.end.setValue(80)
    req = w.capture_request()
    assert (req.steps, req.guidance, req.seed, req.scheduler, req.prompt, req.negative_prompt) == (
        7,
        3.5,
        4242,
        "Euler a",
        "a green star",
        "blurry",
    )
    c = req.controls[0]
    assert (c.weight, c.start, c.end) == (0.65, 0.1, 0.8)
    box.enabled.setChecked(False)
    assert w.capture_request().controls == ()


def test_unlocked_seed_changes_each_generate_and_is_shown(make_window):
    w = make_window()
    seeds = {w.capture_request().seed for _ in range(3)}
    assert len(seeds) == 3 and w.panel.seed.value() in seeds


@pytest.mark.parametrize("content", [b"not an image at all", "truncated", "16bit"])
def test_bad_file_shows_an_error_and_keeps_the_sketch(make_window, tmp_path, content):
    w = make_window()
    stroke(w.canvas, [(0.2, 0.2), (0.8, 0.8)])
    before = ink(w).copy()
    path = tmp_path / "bad.png"
    if content == "truncated":
        Image.fromarray(circle_sketch(64)).save(path)
        path.write_bytes(path.read_bytes()[:60])
    elif content == "16bit":
        Image.fromarray(np.full((32, 32), 40000, np.uint16)).save(path)
    else:
        path.write_bytes(content)
    ok = w.load_layer_file("scribble", str(path))
    if content == "16bit":  # readable: converted, with a note, undoable
        assert ok
        w.undo_action.trigger()
    else:
        assert not ok
        assert w.banner.isVisible() and "bad.png" in w.banner.label.text()
    assert np.array_equal(ink(w), before)


def test_opening_a_noisebrush_png_restores_its_settings(make_window, tmp_path, qtbot):
    w = make_window()
    req = GenerationRequest("a blue square", negative_prompt="noise", steps=13, guidance=8.5, seed=99, width=64, height=64,
                            scheduler="DDIM", controls=(ControlSpec("scribble", circle_sketch(), weight=0.4),))  # fmt: skip
    path = save_png(np.full((64, 64, 3), 128, np.uint8), req, tmp_path / "old.png")
    with qtbot.waitSignal(w.files.files_read, timeout=10000):  # read on a worker
        w.open_files([str(path)])
    v = w.panel.values()
    assert (v.prompt, v.negative, v.steps, v.guidance, v.seed, v.seed_locked, v.scheduler) == (
        "a blue square",
        "noise",
        13,
        8.5,
        99,
        True,
        "DDIM",
    )
    assert w.layers_panel.boxes["scribble"].weight.value() == 40
    assert w.capture_request().seed == 99


def test_history_click_restores_that_result(make_window, qtbot):
    w = make_window()
    w.panel.steps.setValue(3)
    w.panel.seed_lock.setChecked(True)
    for seed in (5, 6):
        w.panel.seed.setValue(seed)
        with qtbot.waitSignal(w.bridge.finished, timeout=60000):
            w.generate()
    first = w.history.item(1)  # newest first
    w.history.itemClicked.emit(first)
    assert w.panel.seed.value() == 5
    assert w.last_result.params.seed == 5
    out = tmp = w.data_dir / "saved.png"
    assert w.save_result(str(out))
    from noisebrush.engine.metadata import read_request

    assert read_request(tmp).seed == 5


def test_autosave_is_restored_after_a_crash(make_window, tmp_path, qtbot):
    data = tmp_path / "crashdata"
    a = make_window(data_dir=data)
    stroke(a.canvas, [(0.2, 0.7), (0.8, 0.2)])
    a.panel.prompt.setPlainText("my precious sketch")
    a.autosave_now()
    drawn = ink(a).copy()
    # crash: the process dies without closing the window. Its autosave folder stays; its lock is no longer held
    # (QLockFile sees the PID gone: in this one test process, A lets go of it instead)
    a.bridge.shutdown()
    assert a.autosave.lock.exists()
    a.autosave._lock.unlock()
    b = make_window(data_dir=data, restore="ask")
    assert b.banner.isVisible() and b.banner.action.text() == "Restore sketch"
    b.banner.action.click()
    assert np.array_equal(ink(b), drawn)
    assert b.panel.values().prompt == "my precious sketch"
    b.close()
    assert not b.autosave.lock.exists()  # a clean exit leaves no crash marker


def test_models_folder_fills_the_pickers_and_a_layer_controlnet_reaches_the_request(make_window, tmp_path, tiny_model, qtbot):
    import shutil

    from tiny_model import tiny_controlnet, tiny_unet

    models = tmp_path / "models"
    shutil.copytree(tiny_model, models / "my-model")
    tiny_controlnet(tiny_unet(), 2).save_pretrained(models / "depth-controlnet")
    w = make_window()
    w.settings.setValue("models_dir", str(models))
    with qtbot.waitSignal(w.files.models_scanned, timeout=10000):  # the scan runs on a worker
        w.refresh_models()
    assert w.panel.model.findData(str(models / "my-model")) >= 0
    box = w.layers_panel.boxes["depth"]
    idx = box.controlnet.findData(str(models / "depth-controlnet"))
    assert idx >= 0 and w.layers_panel.boxes["scribble"].controlnet.findData(str(models / "depth-controlnet")) < 0
    box.controlnet.setCurrentIndex(idx)
    w.layers_panel.set_active("depth")
    stroke(w.canvas, [(0.3, 0.3), (0.7, 0.7)])
    spec = w.capture_request().controls[0]
    assert spec.kind == "depth" and spec.model == str(models / "depth-controlnet")
