"""The GUI against the Backend protocol alone (a scripted backend: no torch, no diffusers), and the state model's
rules: restores never generate, display-only changes never generate, live mode keeps the seed."""

from __future__ import annotations

import numpy as np
import pytest
from fake_backend import FakeBackend
from helpers import open_window
from PySide6.QtCore import QPoint, Qt
from PySide6.QtTest import QTest

from noisebrush.engine.engine import Engine
from noisebrush.gui.document import qimage_to_rgba


@pytest.fixture
def window(fake_window):
    return fake_window


def stroke(w) -> None:
    rect = w.canvas.doc_rect_on_screen()
    a, b = QPoint(int(rect.left() + 10), int(rect.top() + 10)), QPoint(int(rect.right() - 10), int(rect.bottom() - 10))
    QTest.mousePress(w.canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, a)
    QTest.mouseMove(w.canvas, b)
    QTest.mouseRelease(w.canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, b)


def test_the_gui_runs_on_any_backend_previews_result_and_history(window, qtbot):
    w = window
    with qtbot.waitSignal(w.files.models_scanned, timeout=10000):
        w.refresh_models()
    assert w.panel.model.itemText(w.panel.model.findData("")) == "Fake default"  # the backend's own model list
    assert w.layers_panel.boxes["canny"].controlnet.findData("fake-canny") >= 0
    assert w.layers_panel.boxes["depth"].controlnet.findData("fake-canny") < 0
    stroke(w)
    w.state.update(steps=5)
    previews = []
    w.bridge.preview.connect(lambda job, step, total, img, el, box: previews.append(step))
    with qtbot.waitSignal(w.bridge.finished, timeout=10000):
        w.generate_action.trigger()
    assert previews and previews[-1] == 5
    grey = w.backend.requests[-1].controls[0].image.mean()
    assert grey > 0  # the stroke reached the backend's request
    assert int(qimage_to_rgba(w.canvas.result)[0, 0, 0]) == int(grey) and not w.canvas.result_is_preview
    assert w.history.count() == 1 and w.state.history[0].params.controls[0].kind == "scribble"


def test_a_layer_without_a_controlnet_says_so_and_stays_out_of_the_request(window, qtbot):
    w = window
    with qtbot.waitSignal(w.files.models_scanned, timeout=10000):
        w.refresh_models()
    canny = w.layers_panel.boxes["canny"]
    assert canny.note.isVisibleTo(w) and "no Canny edges ControlNet" in canny.note.text()
    assert not w.layers_panel.boxes["scribble"].note.isVisibleTo(w)
    w.layers_panel.set_active("canny")
    stroke(w)
    assert [c.kind for c in w.capture_request().controls] == []
    canny.controlnet.setCurrentIndex(canny.controlnet.findData("fake-canny"))
    assert not canny.note.isVisibleTo(w)
    (spec,) = w.capture_request().controls
    assert spec.kind == "canny" and spec.model == "fake-canny"


def test_in_live_mode_a_history_click_restores_without_generating(window, qtbot):
    w = window
    w.state.update(steps=3, seed_locked=True, seed=11)
    with qtbot.waitSignal(w.bridge.finished, timeout=10000):
        w.generate()
    w.state.update(seed=12)
    with qtbot.waitSignal(w.bridge.finished, timeout=10000):
        w.generate()
    w.panel.live.setChecked(True)  # turning live on makes one frame
    qtbot.waitUntil(lambda: len(w.backend.requests) == 3 and w.job is None, timeout=10000)
    w.history.itemClicked.emit(w.history.item(w.history.count() - 1))  # the oldest: seed 11
    qtbot.wait(200)  # longer than the live delay
    assert w.panel.seed.value() == 11 and w.last_result.params.seed == 11
    assert len(w.backend.requests) == 3 and w.job is None


def test_display_only_changes_do_not_generate_but_request_changes_do_in_live_mode(window, qtbot):
    w = window
    w.state.update(steps=2, live=True)
    qtbot.waitUntil(lambda: len(w.backend.requests) == 1 and w.job is None, timeout=10000)
    box = w.layers_panel.boxes["scribble"]
    box.opacity.setValue(30)
    box.visible.setChecked(False)
    qtbot.wait(200)
    assert len(w.backend.requests) == 1
    box.weight.setValue(50)
    qtbot.waitUntil(lambda: len(w.backend.requests) == 2 and w.job is None, timeout=10000)


def test_live_mode_keeps_the_seed_and_generate_without_lock_draws_a_new_one(window, qtbot):
    w = window
    seeds = {w.capture_request().seed for _ in range(3)}
    assert len(seeds) == 3 and w.panel.seed.value() in seeds
    w.state.update(steps=2, live=True)
    qtbot.waitUntil(lambda: len(w.backend.requests) == 1 and w.job is None, timeout=10000)
    stroke(w)
    qtbot.waitUntil(lambda: len(w.backend.requests) == 2 and w.job is None, timeout=10000)
    assert w.backend.requests[0].seed == w.backend.requests[1].seed == w.panel.seed.value()
    assert np.asarray(w.backend.requests[1].controls[0].image).max() > 0


def test_a_checkpoint_file_model_is_picked_with_the_browse_button_and_survives_a_restart(qtbot, tmp_path, monkeypatch):
    from safetensors.numpy import save_file

    from noisebrush.gui import files

    ckpt = tmp_path / "my-model.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": np.zeros((4, 4), np.float32)}, str(ckpt))
    monkeypatch.setattr(files.QFileDialog, "getOpenFileName", lambda *a, **k: (str(ckpt), ""))
    w = open_window(qtbot, tmp_path, Engine(FakeBackend()))
    w.panel.model_browse_requested.emit("file")
    assert w.state.settings.model == str(ckpt) and w.panel.model.currentText() == "my-model.safetensors"
    w.close()
    again = open_window(qtbot, tmp_path, Engine(FakeBackend()))  # same settings file
    assert again.state.settings.model == str(ckpt)
    again.close()


def test_a_seed_above_two_to_the_31_is_restored_unclamped(window):
    from noisebrush.engine.request import GenerationRequest

    window.state.restore_request(GenerationRequest("x", seed=4_000_000_000, width=64, height=64))
    assert window.panel.seed.value() == 4_000_000_000 and window.capture_request().seed == 4_000_000_000


def test_a_png_cannot_choose_a_model_the_person_does_not_have(window, qtbot, tmp_path):
    from noisebrush.engine.metadata import save_png
    from noisebrush.engine.request import ControlSpec, GenerationRequest

    depth = ControlSpec("depth", np.full((64, 64, 3), 90, np.uint8), model="/tmp/evil-cn")
    req = GenerationRequest("x", model="../../../../etc/evil", width=64, height=64, seed=1, controls=(depth,))
    path = save_png(np.zeros((64, 64, 3), np.uint8), req, tmp_path / "evil.png")
    with qtbot.waitSignal(window.files.files_read, timeout=10000):
        window.open_files([str(path)])
    assert window.state.settings.model == "" and window.doc.layers["depth"].settings.controlnet == ""
    assert window.state.settings.seed == 1  # the rest of the settings came back
    assert "not among your models" in window.statusBar().currentMessage()


def test_a_png_whose_settings_fail_is_an_error_and_not_loaded_as_a_map(window, qtbot, tmp_path):
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("noisebrush", "[1, 2, 3]", zip=True)
    path = tmp_path / "bad.png"
    Image.fromarray(np.full((64, 64, 3), 255, np.uint8)).save(path, pnginfo=info)
    before = window.state.settings
    with qtbot.waitSignal(window.files.files_read, timeout=10000):
        window.open_files([str(path)])
    assert window.banner.isVisible() and "damaged" in window.banner.label.text()
    assert window.state.settings == before
    assert all(layer.to_spec(64, 64) is None for layer in window.doc.layers.values())


def test_two_windows_keep_their_own_autosave_and_a_killed_ones_sketch_is_offered(qtbot, tmp_path):
    a = open_window(qtbot, tmp_path, Engine(FakeBackend()), restore="ask")
    b = open_window(qtbot, tmp_path, Engine(FakeBackend()), restore="ask")  # the same data folder
    assert not b.banner.isVisible()  # A is running, not crashed
    assert a.autosave.dir != b.autosave.dir
    stroke(a)
    a.autosave_now()
    drawn = qimage_to_rgba(a.doc.layers["scribble"].image)
    a.bridge.shutdown()  # A is killed: its folder stays and its lock is no longer held
    a.autosave._lock.unlock()
    b.close()  # B exits cleanly: only B's own folder goes
    assert not b.autosave.dir.exists() and a.autosave.dir.exists()
    c = open_window(qtbot, tmp_path, Engine(FakeBackend()), restore="ask")
    assert c.banner.isVisible() and c.banner.action.text() == "Restore sketch"
    c.banner.action.click()
    assert np.array_equal(qimage_to_rgba(c.doc.layers["scribble"].image), drawn)
    assert not a.autosave.dir.exists()  # taken up by C
    c.close()


def test_a_failed_autosave_keeps_the_last_good_one(window, monkeypatch):
    from PySide6.QtGui import QImage

    from noisebrush.gui.autosave import SessionFolder

    stroke(window)
    window.autosave_now()
    good = window.autosave.session.latest()
    window.doc.clear_layer("scribble")
    monkeypatch.setattr(QImage, "save", lambda *a, **k: False)  # the disk is full
    with pytest.raises(OSError, match="disk full"):
        window.autosave.save(window.state)
    monkeypatch.undo()
    assert window.autosave.session.latest() == good
    restored = window.state.doc
    folder = SessionFolder(window.autosave.dir)
    folder.load(restored)
    assert qimage_to_rgba(restored.layers["scribble"].image)[..., 3].max() == 255  # the strokes, not an empty layer


def test_history_is_kept_on_disk_and_live_frames_share_one_slot(qtbot, tmp_path):
    a = open_window(qtbot, tmp_path, Engine(FakeBackend()), live_debounce_ms=10)
    a.state.update(steps=2, seed_locked=True, seed=1)
    for seed in (1, 2):
        a.state.update(seed=seed)
        with qtbot.waitSignal(a.bridge.finished, timeout=10000):
            a.generate()
    a.state.update(live=True)
    for n in range(3):  # three live frames
        with qtbot.waitSignal(a.bridge.finished, timeout=10000):
            a.state.update(seed=10 + n)
    qtbot.waitUntil(lambda: a.job is None, timeout=10000)
    assert a.history.count() == 3  # two kept results and one live slot
    a.state.update(live=False)  # stopping live mode keeps its last frame
    a.close()
    folder = tmp_path / "data" / "history"
    qtbot.waitUntil(lambda: len(list(folder.glob("*.png"))) == 3, timeout=10000)
    b = open_window(qtbot, tmp_path, Engine(FakeBackend()))
    qtbot.waitUntil(lambda: b.history.count() == 3, timeout=10000)  # read on a worker at start
    assert [b.history.item(i).data(Qt.ItemDataRole.UserRole).params.seed for i in range(b.history.count())] == [12, 2, 1]
    b.close()


def test_variations_each_stream_previews_land_in_history_and_cancel_stops_them_all(window, qtbot):
    w = window
    w.state.update(steps=3, seed_locked=True, seed=20)
    previews = set()
    w.bridge.preview.connect(lambda job, *a: previews.add(job))
    jobs = w.jobs.generate_variations(4)
    qtbot.waitUntil(lambda: w.job is None, timeout=20000)
    assert previews == set(jobs) and w.history.count() == 4
    seeds = sorted(w.history.item(i).data(Qt.ItemDataRole.UserRole).params.seed for i in range(4))
    assert seeds == [20, 21, 22, 23]
    w.state.update(steps=200)
    w.jobs.generate_variations(4)
    with qtbot.waitSignal(w.bridge.preview, timeout=10000):
        pass
    w.cancel()
    qtbot.waitUntil(lambda: w.job is None and not w.panel.cancel_btn.isEnabled(), timeout=10000)
    qtbot.wait(200)
    assert w.history.count() == 4  # none of the cancelled batch finished


def test_loras_are_picked_weighted_and_removed_in_the_panel(window, qtbot):
    from noisebrush.engine.request import GenerationRequest, LoraSpec

    w = window
    with qtbot.waitSignal(w.files.models_scanned, timeout=10000):
        w.refresh_models()
    loras = w.panel.loras
    index = loras.picker.findData("/loras/style-a.safetensors")
    assert index > 0
    loras.picker.activated.emit(index)
    assert w.capture_request().loras == (LoraSpec("/loras/style-a.safetensors", 1.0),)
    _row, weight, label = loras.rows["/loras/style-a.safetensors"]
    weight.setValue(-50)
    assert w.capture_request().loras == (LoraSpec("/loras/style-a.safetensors", -0.5),) and label.text() == "-0.50"
    loras._remove("/loras/style-a.safetensors")
    assert w.capture_request().loras == () and not loras.rows
    # a file may name LoRAs the person does not have: those are left out, with a note
    notes = w.state.restore_request(GenerationRequest("x", loras=(LoraSpec("/elsewhere/evil.safetensors", 1.0),
                                                                   LoraSpec("/loras/style-a.safetensors", 0.3))),
                                    trusted=False)  # fmt: skip
    assert w.state.settings.loras == (("/loras/style-a.safetensors", 0.3),) and any("LoRAs" in n for n in notes)


def test_a_reopened_png_sends_exactly_the_maps_it_holds_until_they_are_edited(window, qtbot, tmp_path):
    """Its maps go into 512 px layers; captured back untouched they must be the saved maps bit for bit, or the same
    seed no longer gives the same picture (seen on a ComfyUI server: a restored scribble differed by 40 levels)."""
    from noisebrush.engine.metadata import save_png
    from noisebrush.engine.request import ControlSpec, GenerationRequest

    rng = np.random.default_rng(3)
    scribble = np.zeros((96, 128, 3), np.uint8)
    scribble[rng.integers(0, 96, 200), rng.integers(0, 128, 200)] = 255  # single pixels: resampling blurs them
    depth = np.repeat(rng.integers(0, 256, (96, 128, 1), dtype=np.uint8), 3, axis=2)
    picture = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
    mask = np.zeros((96, 128), np.uint8)
    mask[10:40, 20:90] = 255
    req = GenerationRequest("x", width=128, height=96, seed=5, controls=(ControlSpec("scribble", scribble),
                            ControlSpec("depth", depth)), init_image=picture, mask=mask, strength=0.8)  # fmt: skip
    path = save_png(np.zeros((96, 128, 3), np.uint8), req, tmp_path / "r.png")
    with qtbot.waitSignal(window.files.files_read, timeout=10000):
        window.open_files([str(path)])
    again = window.capture_request()
    maps = {c.kind: c.image for c in again.controls}
    assert np.array_equal(maps["scribble"], scribble) and np.array_equal(maps["depth"], depth)
    assert np.array_equal(again.init_image, picture) and np.array_equal(again.mask, mask)
    sent = lambda: {c.kind: c.image for c in window.capture_request().controls}["scribble"]  # noqa: E731
    stroke(window)  # an edit: the layer is what is sent now
    assert not np.array_equal(sent(), scribble)
    window.undo_action.trigger()  # and undoing it brings the exact map back
    assert np.array_equal(sent(), scribble)
