"""Preprocessors: weightless ones always work; weighted ones load from the HF cache or fail fast and clearly."""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest
from tiny_depth import write_tiny_depth_anything

from noisebrush.engine.errors import UserError
from noisebrush.engine.preprocess import (
    PREPROCESSORS,
    MissingWeights,
    download_weights,
    fit_aspect,
    missing_weights,
    run_preprocessor,
)


def photo(w: int = 160, h: int = 120) -> np.ndarray:
    img = np.full((h, w, 3), (90, 140, 200), np.uint8)
    cv2.circle(img, (50, 60), 30, (220, 40, 40), -1)
    cv2.rectangle(img, (95, 30), (145, 100), (40, 160, 60), -1)
    cv2.circle(img, (50, 60), 30, (20, 20, 20), 2)  # an illustration's dark outlines, what line art follows
    cv2.rectangle(img, (95, 30), (145, 100), (20, 20, 20), 2)
    return img


@pytest.mark.parametrize("name", ["canny", "lineart"])
def test_weightless_preprocessors_make_nonempty_maps_of_the_canvas_size(name, tmp_path):
    result = run_preprocessor(name, photo(), cache_dir=tmp_path)  # an empty cache: they need none
    assert result.image.shape == (120, 160, 3) and result.image.dtype == np.uint8
    lit = result.image[..., 0] > 127
    assert 0.005 < lit.mean() < 0.5  # lines, not a blank or a filled map
    # the lines sit on the shapes' outlines
    edge = cv2.Canny(cv2.cvtColor(photo(), cv2.COLOR_RGB2GRAY), 50, 100) > 0
    near = cv2.dilate(edge.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    assert (lit & near).sum() / lit.sum() > 0.8
    fitted, _ = fit_aspect(result.image, 256, 256)
    assert fitted.shape == (256, 256, 3) and fitted.max() > 0


@pytest.mark.parametrize(
    "name,repo", [("depth_anything", "depth-anything/Depth-Anything-V2-Small-hf"), ("openpose", "lllyasviel/Annotators")]
)
def test_missing_weights_fail_fast_and_say_what_is_missing(name, repo, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(MissingWeights) as err:
        run_preprocessor(name, photo(), cache_dir=tmp_path)
    assert time.perf_counter() - t0 < 5
    msg = str(err.value)
    assert repo in msg and "MB" in msg and "needs the network" in msg
    assert err.value.missing == list(PREPROCESSORS[name].weights)


def test_depth_anything_loads_from_the_cache_layout(tmp_path):
    write_tiny_depth_anything(tmp_path)
    assert missing_weights(PREPROCESSORS["depth_anything"], tmp_path) == []
    result = run_preprocessor("depth_anything", photo(), cache_dir=tmp_path)
    assert result.image.shape == (120, 160, 3)
    assert result.image.min() == 0 and result.image.max() == 255  # normalised to the full 8-bit range


def test_download_reports_progress_and_can_be_cancelled(tmp_path):
    pre = PREPROCESSORS["openpose"]
    seen = []

    def fake_fetch(repo, filename, cache_dir=None, tqdm_class=None):
        bar = tqdm_class(total=1000, disable=True)
        for _ in range(10):
            bar.update(100)
        bar.close()
        return str(tmp_path / filename)

    download_weights(pre, progress=lambda done, total: seen.append((done, total)), cache_dir=tmp_path, fetch=fake_fetch)
    assert seen[-1][0] == seen[-1][1] and len(seen) >= 10
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)

    stop = threading.Event()
    stop.set()
    with pytest.raises(UserError, match="cancelled"):
        download_weights(pre, cancelled=stop, cache_dir=tmp_path, fetch=fake_fetch)


def test_fit_aspect_letterbox_and_crop():
    img = np.full((100, 200, 3), 255, np.uint8)
    box, (s, dx, dy) = fit_aspect(img, 100, 100, "letterbox")
    assert box[0, 50].max() == 0 and box[50, 50].min() == 255 and (s, dx, dy) == (0.5, 0.0, 25.0)
    crop, (s, dx, dy) = fit_aspect(img, 100, 100, "crop")
    assert crop.min() == 255 and s == 1.0 and dx == -50.0


def test_make_control_dialog_previews_then_replaces_the_layer(qtbot, tmp_path, tiny_model):
    from PIL import Image
    from PySide6.QtCore import QSettings

    from noisebrush.gui.app import create_main_window
    from noisebrush.gui.document import qimage_to_rgba
    from noisebrush.gui.preprocess_dialog import PreprocessDialog

    w = create_main_window(model=tiny_model, settings=QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat),
                           data_dir=tmp_path / "data", restore="never")  # fmt: skip
    qtbot.addWidget(w)
    try:
        Image.fromarray(photo()).save(tmp_path / "photo.png")
        dlg = PreprocessDialog(w, w.doc.size.width(), w.doc.size.height(), cache_dir=str(tmp_path / "hf"))
        dlg.accepted_map.connect(w.files.use_map)
        qtbot.addWidget(dlg)
        dlg.kind.setCurrentIndex(dlg.kind.findData("openpose"))
        assert "209 MB" in dlg.download_btn.text()
        assert "lllyasviel/Annotators" in dlg.status.text()
        dlg.kind.setCurrentIndex(dlg.kind.findData("canny"))
        assert dlg.set_image(str(tmp_path / "photo.png"))
        dlg.run()
        qtbot.waitUntil(lambda: dlg.use_btn.isEnabled(), timeout=20000)
        assert dlg.preview.pixmap() is not None and not dlg.preview.pixmap().isNull()
        assert qimage_to_rgba(w.doc.layers["scribble"].image)[..., 3].max() == 0  # nothing replaced before "Use"
        dlg.use_btn.click()
        ink = qimage_to_rgba(w.doc.layers["scribble"].image)[..., 3]
        assert ink.max() == 255 and ink.shape == (512, 512)
        w.undo_action.trigger()
        assert qimage_to_rgba(w.doc.layers["scribble"].image)[..., 3].max() == 0
    finally:
        w.close()
