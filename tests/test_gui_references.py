"""Reference layers in the window (issue 27): add, set, limit, delete, undo; kept in PNGs, .ora, autosave, history."""

import numpy as np
import pytest
from PIL import Image
from test_gui import stroke

from noisebrush.gui.references import MASK_LAYER, SAVED_MASK, set_reference


def picture(rgb=(220, 40, 30), size=(48, 64)) -> np.ndarray:
    img = np.zeros((*size, 3), np.uint8)
    img[...] = rgb
    img[: size[0] // 2, : size[1] // 2] = (255, 255, 255)  # something to tell a crop or a flip by
    return img


def test_a_reference_is_added_set_and_reaches_the_request(fake_window):
    w = fake_window
    w.state.update(width=128, height=128)
    box = w.layers_panel.references
    box.add_picture(picture())
    (key,) = box.rows
    row = box.rows[key]
    assert not row.thumb.pixmap().isNull()  # a thumbnail in the panel, nothing on the canvas
    row.weight.setValue(0.55)
    row.mode.setCurrentIndex(row.mode.findData("style"))
    row.start.setValue(0.2)
    (ref,) = w.state.capture_request().references
    assert (ref.weight, ref.mode, ref.start, ref.end, ref.mask) == (0.55, "style", 0.2, 1.0, None)
    assert np.array_equal(ref.image, picture())
    row.enabled.setChecked(False)
    assert w.state.capture_request().references == ()


def test_limited_to_the_mask_layer_it_sends_that_mask_and_an_empty_one_is_one_sentence(fake_window):
    w = fake_window
    w.state.update(width=128, height=128)
    box = w.layers_panel.references
    box.add_picture(picture())
    row = next(iter(box.rows.values()))
    row.limit.setCurrentIndex(row.limit.findData(MASK_LAYER))
    from noisebrush.engine.errors import UserError

    with pytest.raises(UserError, match="limited to the Mask layer, which is empty"):
        w.state.capture_request()
    w.generate()
    assert w.banner.isVisible() and "Mask layer, which is empty" in w.banner.label.text()
    w.layers_panel.set_active("mask")
    stroke(w.canvas, [(0.1, 0.5), (0.4, 0.5)])
    (ref,) = w.state.capture_request().references
    assert ref.mask.shape == (128, 128) and ref.mask[64, 20:45].min() > 0 and ref.mask[:, 100:].max() == 0


def test_delete_and_undo_and_the_limit_of_four(fake_window):
    from noisebrush.gui.references import delete_reference

    w = fake_window
    box = w.layers_panel.references
    for i in range(5):
        box.add_picture(picture((40 * i, 100, 200)))
    assert len(w.doc.references) == 4 and "at most 4 reference pictures" in w.banner.label.text()
    first = w.doc.references[0].key
    delete_reference(w.doc, first)
    assert first not in box.rows and len(box.rows) == 3
    w.doc.undo_stack.undo()
    assert list(box.rows)[0] == first


def test_loading_a_picture_runs_on_a_worker_and_a_bad_file_says_so(fake_window, qtbot, tmp_path):
    w = fake_window
    box = w.layers_panel.references
    Image.fromarray(picture()).save(tmp_path / "ref.png")
    (tmp_path / "bad.png").write_text("not a picture")
    box.load(str(tmp_path / "ref.png"))  # (its signals may fire before a waitSignal here could connect)
    qtbot.waitUntil(lambda: len(w.doc.references) == 1, timeout=10000)
    box.load(str(tmp_path / "bad.png"))
    qtbot.waitUntil(lambda: w.banner.isVisible() and "bad.png" in w.banner.label.text(), timeout=10000)
    assert len(w.doc.references) == 1  # nothing lost, nothing half-added


def test_use_result_and_paste(fake_window, qtbot):
    from PySide6.QtWidgets import QApplication

    from noisebrush.gui.engine_bridge import to_qimage

    w = fake_window
    box = w.layers_panel.references
    box.use_result()
    assert "no result yet" in w.banner.label.text() and not w.doc.references
    with qtbot.waitSignal(w.bridge.finished, timeout=10000):
        w.generate()
    box.use_result()
    assert np.array_equal(w.doc.references[0].image, w.state.last_result.image)
    QApplication.clipboard().setImage(to_qimage(picture()))
    box.paste()
    assert np.array_equal(w.doc.references[1].image, picture())


def _generate_and_save(w, qtbot, path):
    with qtbot.waitSignal(w.bridge.finished, timeout=10000):
        w.generate()
    assert w.files.save_result(str(path))


def test_a_saved_png_reopens_with_its_reference_pictures(qtbot, tmp_path):
    from fake_backend import FakeBackend
    from helpers import open_window

    from noisebrush.engine.engine import Engine

    a = open_window(qtbot, tmp_path / "a", Engine(FakeBackend(step_s=0.01)))
    try:
        a.state.update(width=128, height=128)
        a.layers_panel.references.add_picture(picture())
        a.layers_panel.set_active("mask")
        stroke(a.canvas, [(0.1, 0.5), (0.4, 0.5)])
        set_reference(a.doc, a.doc.references[0].key, mode="composition", weight=1.2, limit=MASK_LAYER)
        before = a.state.capture_request().references
        _generate_and_save(a, qtbot, tmp_path / "out.png")
    finally:
        a.close()
    b = open_window(qtbot, tmp_path / "b", Engine(FakeBackend(step_s=0.01)))
    try:
        with qtbot.waitSignal(b.files.files_read, timeout=10000):
            b.files.open_picture(str(tmp_path / "out.png"))
        (layer,) = b.doc.references
        assert layer.limit == SAVED_MASK and b.layers_panel.references.rows[layer.key].limit.currentData() == SAVED_MASK
        assert b.state.capture_request().references == before
    finally:
        b.close()


@pytest.mark.parametrize("through_krita", [False, True])
def test_a_project_keeps_its_reference_pictures(qtbot, tmp_path, through_krita):
    from helpers import project_round_trip

    def build(a):
        a.layers_panel.references.add_picture(picture())
        a.layers_panel.references.add_picture(picture((10, 20, 230), size=(300, 200)))
        set_reference(a.doc, a.doc.references[1].key, mode="style", weight=0.3, start=0.1, end=0.7)
        a.state.update(width=128, height=128)
        return a.state.capture_request().references

    with project_round_trip(qtbot, tmp_path, build, through_krita) as (before, b):
        after = b.state.capture_request().references
        assert [(r.weight, r.mode, r.start, r.end) for r in after] == [(r.weight, r.mode, r.start, r.end) for r in before]
        assert np.array_equal(after[0].image, before[0].image)  # small enough to travel as it is
        big = after[1].image  # letterboxed into the 128 px canvas: the same picture, scaled to fit
        assert big.shape[1] / big.shape[0] == pytest.approx(200 / 300, rel=0.02)
        assert abs(big.astype(float).mean((0, 1)) - before[1].image.astype(float).mean((0, 1))).max() < 4
        assert b.layers_panel.references.rows  # shown in the panel


def test_autosave_and_history_bring_references_back(qtbot, tmp_path):
    from fake_backend import FakeBackend
    from helpers import open_window
    from PySide6.QtCore import QSettings

    from noisebrush.engine.engine import Engine
    from noisebrush.gui.app import create_main_window

    a = open_window(qtbot, tmp_path, Engine(FakeBackend(step_s=0.01)))
    a.layers_panel.references.add_picture(picture())
    set_reference(a.doc, a.doc.references[0].key, mode="style", weight=0.4)
    with qtbot.waitSignal(a.bridge.finished, timeout=10000):
        a.generate()
    item = a.state.history[0]
    from noisebrush.gui.references import delete_reference

    delete_reference(a.doc, a.doc.references[0].key)
    a.state.restore_result(item, None)
    assert [(r.mode, r.weight) for r in a.doc.references] == [("style", 0.4)]  # a history item brings them back
    a.autosave_now()
    a.bridge.shutdown()
    a.autosave._lock.unlock()  # as if the process had died
    b = create_main_window(Engine(FakeBackend(step_s=0.01)), settings=QSettings(str(tmp_path / "s.ini"),
                           QSettings.Format.IniFormat), data_dir=tmp_path / "data", restore="ask")  # fmt: skip
    qtbot.addWidget(b)
    try:
        b.banner.action.click()
        (layer,) = b.doc.references
        assert (layer.mode, layer.weight) == ("style", 0.4) and np.array_equal(layer.image, picture())
    finally:
        b.close()
        a.close()


def test_a_missing_adapter_offers_the_download_of_just_its_files(fake_window, qtbot, tmp_path):
    w = fake_window
    message = ("no SD1.5 IP-Adapter found: reference pictures need models/ip-adapter_sd15.safetensors and "
               "models/image_encoder/ from h94/IP-Adapter in the models folder or the Hugging Face cache")  # fmt: skip
    w.bridge.failed.emit(1, message)
    assert w.banner.action.isVisible() and w.banner.action.text() == "Download IP-Adapter…"
    sizes = {
        "models/ip-adapter_sd15.safetensors": 44_000_000,
        "models/image_encoder/config.json": 600,
        "models/image_encoder/model.safetensors": 2_500_000_000,
        "models/ip-adapter_sd15.bin": 44_000_000,
    }
    fetched = []
    w.files.download_adapter_dialog("sd15", fetch=lambda repo, **kw: fetched.append((repo, kw["allow_patterns"])) or
                                    str(tmp_path), list_files=lambda repo: sizes)  # fmt: skip
    dlg = w.files._download_dialog
    assert dlg.repo.text() == "h94/IP-Adapter" and dlg.repo.isReadOnly()
    dlg.start_btn.click()
    qtbot.waitUntil(lambda: dlg.plan is not None, timeout=5000)
    assert "3 files, 2.54 GB" in dlg.info.text()
    dlg.start_btn.click()
    qtbot.waitUntil(lambda: bool(fetched), timeout=5000)
    assert fetched[0][0] == "h94/IP-Adapter" and sorted(fetched[0][1]) == sorted(set(sizes) - {"models/ip-adapter_sd15.bin"})
