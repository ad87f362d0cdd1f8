"""Regions in the window (issue 26): add, type, paint, reorder, delete, undo; kept in .ora, autosave and PNGs."""

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from test_gui import stroke

from noisebrush.gui.document import qimage_to_rgba


def add_painted(w, prompt: str, points) -> str:
    w.layers_panel.regions.add_button.click()
    key = list(w.doc.regions)[-1]
    row = w.layers_panel.regions.rows[key]
    assert row.active.isChecked() and w.canvas.active_layer == key  # a new region is the one being painted
    QTest.keyClicks(row.prompt, prompt)
    stroke(w.canvas, points)
    return key


def test_a_region_is_added_typed_painted_and_reaches_the_request(fake_window):
    w = fake_window
    w.state.update(width=128, height=128)
    key = add_painted(w, "a red fox", [(0.1, 0.5), (0.4, 0.5)])
    req = w.state.capture_request()
    assert [r.prompt for r in req.regions] == ["a red fox"]
    mask = req.regions[0].mask
    assert mask.shape == (128, 128) and mask[64, 20:50].min() > 0 and mask[:, 100:].max() == 0  # where it was painted
    paint = qimage_to_rgba(w.doc.regions[key].image)
    assert tuple(int(v) for v in paint[paint[..., 3] == 255][0, :3]) == w.doc.regions[key].colour  # in its own colour


def test_regions_reorder_delete_and_undo(fake_window):
    w = fake_window
    a = add_painted(w, "sky", [(0.1, 0.2), (0.9, 0.2)])
    b = add_painted(w, "forest", [(0.1, 0.8), (0.9, 0.8)])
    assert list(w.doc.regions) == [a, b] and list(w.layers_panel.regions.rows) == [b, a]  # the panel lists top first
    from noisebrush.gui.regions import delete_region, move_region

    move_region(w.doc, b, -1)
    assert list(w.doc.regions) == [b, a] and list(w.layers_panel.regions.rows) == [a, b]
    delete_region(w.doc, a)
    assert list(w.doc.regions) == [b] and w.canvas.active_layer != a
    w.doc.undo_stack.undo()
    assert list(w.doc.regions) == [b, a]


def test_typing_a_region_prompt_starts_a_live_frame_with_it(fake_window, qtbot):
    w = fake_window
    key = add_painted(w, "a fox", [(0.2, 0.2), (0.6, 0.6)])
    seen = []
    w.bridge.finished.connect(lambda job, ev: seen.append(ev.params))
    w.state.update(live=True)
    qtbot.waitUntil(lambda: bool(seen), timeout=10000)  # live mode's first frame
    seen.clear()
    QTest.keyClicks(w.layers_panel.regions.rows[key].prompt, " in snow")
    qtbot.waitUntil(lambda: any(p.regions and p.regions[0].prompt == "a fox in snow" for p in seen), timeout=10000)


@pytest.mark.parametrize("through_krita", [False, True])
def test_a_project_keeps_every_region_and_reopens_them(qtbot, tmp_path, through_krita):
    from helpers import project_round_trip

    def build(a):
        add_painted(a, "an orange sunset sky", [(0.1, 0.2), (0.9, 0.2)])
        add_painted(a, "a snowy pine forest", [(0.1, 0.8), (0.9, 0.8)])
        a.state.update(width=128, height=128)
        return a.state.capture_request().regions

    with project_round_trip(qtbot, tmp_path, build, through_krita) as (before, b):
        after = b.state.capture_request().regions
        assert [r.prompt for r in after] == [r.prompt for r in before]
        for x, y in zip(before, after):
            assert np.array_equal(x.mask > 0, y.mask > 0)


def test_autosave_brings_regions_back_after_a_crash(qtbot, tmp_path):
    from fake_backend import FakeBackend
    from helpers import open_window

    from noisebrush.engine.engine import Engine

    data = tmp_path / "data"
    a = open_window(qtbot, tmp_path, Engine(FakeBackend(step_s=0.01)))
    add_painted(a, "a red fox", [(0.2, 0.5), (0.5, 0.5)])
    a.state.update(width=128, height=128)
    before = a.state.capture_request().regions
    a.autosave_now()
    a.bridge.shutdown()
    a.autosave._lock.unlock()  # as if the process had died
    from PySide6.QtCore import QSettings

    from noisebrush.gui.app import create_main_window

    b = create_main_window(Engine(FakeBackend(step_s=0.01)), settings=QSettings(str(tmp_path / "s.ini"),
                           QSettings.Format.IniFormat), data_dir=data, restore="ask")  # fmt: skip
    qtbot.addWidget(b)
    try:
        assert b.banner.action.text() == "Restore sketch"
        b.banner.action.click()
        b.state.update(width=128, height=128)
        after = b.state.capture_request().regions
        assert [r.prompt for r in after] == ["a red fox"] and np.array_equal(after[0].mask > 0, before[0].mask > 0)
    finally:
        b.close()
        a.close()


def test_a_region_from_the_mask_and_the_shortcut(fake_window, qtbot):
    w = fake_window
    w.region_from_mask()
    assert w.banner.isVisible() and "Mask layer is empty" in w.banner.label.text() and not w.doc.regions
    w.layers_panel.set_active("mask")
    stroke(w.canvas, [(0.3, 0.3), (0.7, 0.3)])
    w.region_from_mask()
    assert len(w.doc.regions) == 1
    region = next(iter(w.doc.regions.values()))
    assert np.array_equal(qimage_to_rgba(region.image)[..., 3] > 0, qimage_to_rgba(w.doc.edit_layers["mask"].image)[..., 3] > 0)
    QTest.keyClick(w, Qt.Key.Key_R, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert len(w.doc.regions) == 2
