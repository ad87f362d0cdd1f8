"""The one registry of control kinds: everything iterates over it, so a new kind is one entry plus tests."""

from __future__ import annotations

import numpy as np
import pytest
from fake_backend import FakeBackend
from helpers import open_window
from PySide6.QtCore import QPoint, Qt
from PySide6.QtTest import QTest

from noisebrush.engine.catalog import classify_folder
from noisebrush.engine.controls import CONTROL_KINDS, ControlKind, ink_to_map, kind_from_name, map_to_ink, register, unregister
from noisebrush.engine.engine import Engine
from noisebrush.engine.errors import UserError
from noisebrush.engine.metadata import read_request, save_png
from noisebrush.engine.preprocess import PREPROCESSORS
from noisebrush.engine.request import ControlSpec


def test_every_kind_round_trips_its_map_through_a_layer():
    rng = np.random.default_rng(0)
    lines = np.repeat(rng.integers(0, 256, (16, 16, 1), dtype=np.uint8), 3, axis=2)
    for kind in CONTROL_KINDS.values():
        back = kind.map_from_layer(kind.layer_from_map(lines))
        assert np.array_equal(back, lines), kind.name


def test_controlnet_names_say_their_kind_and_preprocessors_feed_a_kind_that_lists_them():
    assert kind_from_name("control_v11p_sd15_canny.safetensors") == "canny"
    assert kind_from_name("control_v11p_sd15_lineart") == "lineart"
    assert kind_from_name("control_v11p_sd15_openpose") == "pose"
    assert kind_from_name("controlnet-scribble-sdxl") == "scribble"
    assert kind_from_name("control_v11f1e_sd15_tile") == "tile"
    assert kind_from_name("some-controlnet") is None
    for pre in PREPROCESSORS.values():
        assert pre.name in CONTROL_KINDS[pre.kind].preprocessors


def test_an_unknown_kind_is_a_clear_error():
    with pytest.raises(UserError, match="unknown control kind 'sparkle'"):
        ControlSpec("sparkle", np.zeros((8, 8, 3), np.uint8))


def test_a_users_canny_controlnet_is_classified_and_runs(tmp_path, tiny_model):
    from helpers import circle_sketch, logged_engine
    from tiny_model import tiny_controlnet, tiny_unet

    from noisebrush.engine.events import Finished
    from noisebrush.engine.request import GenerationRequest

    tiny_controlnet(tiny_unet(), 3).save_pretrained(tmp_path / "control_v11p_sd15_canny")
    entry = classify_folder(tmp_path / "control_v11p_sd15_canny")
    assert entry.role == "controlnet" and entry.control_kind == "canny"
    req = GenerationRequest("edges", controls=(ControlSpec("canny", circle_sketch(), model=str(entry.path)),),
                            steps=2, width=64, height=64, seed=1, model=tiny_model)  # fmt: skip
    with logged_engine() as eng:
        assert isinstance(eng.log.wait_end(eng.submit(req)), Finished)
        # without one, the error names the layer to fix
        end = eng.log.wait_end(eng.submit(req.replace(controls=(ControlSpec("canny", circle_sketch()),))))
        assert "no canny ControlNet" in end.message


@pytest.fixture
def halo_kind():
    """A kind no model has: added through the registry alone."""
    register(ControlKind("halo", "Halo", "white halos on black", "ink", ("halo",), ink_to_map, map_to_ink, paint_order=60))
    yield "halo"
    unregister("halo")


def test_a_kind_added_through_the_registry_alone_is_drawn_captured_and_saved(halo_kind, qtbot, tmp_path):
    w = open_window(qtbot, tmp_path, Engine(FakeBackend()))
    try:
        assert halo_kind in w.layers_panel.boxes and w.layers_panel.boxes[halo_kind].title() == "Halo"
        w.layers_panel.set_active(halo_kind)
        rect = w.canvas.doc_rect_on_screen()
        a = QPoint(int(rect.left() + 0.2 * rect.width()), int(rect.center().y()))
        b = QPoint(int(rect.left() + 0.8 * rect.width()), int(rect.center().y()))
        QTest.mousePress(w.canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, a)
        QTest.mouseMove(w.canvas, b)
        QTest.mouseRelease(w.canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, b)
        req = w.capture_request()
        (spec,) = [c for c in req.controls if c.kind == halo_kind]
        assert spec.image.max() == 255 and spec.image[0, 0].max() == 0  # white strokes on black
        path = save_png(np.zeros((req.height, req.width, 3), np.uint8), req, tmp_path / "halo.png")
        back = read_request(path)
        assert [c.kind for c in back.controls] == [halo_kind] and np.array_equal(back.controls[0].image, spec.image)
    finally:
        w.close()
