"""Get models… in the window: offered once on a first start with no model of one's own; a pack downloads from a
Hub stand-in with per-file and overall progress, is cancelled with nothing left behind, resumes after a cut, and
once in, its model is selected and each layer finds its ControlNet in the models folder."""

from __future__ import annotations

import json

import pytest
from fake_backend import FakeBackend
from helpers import open_window
from hub_stub import HubStub
from PySide6.QtCore import QSettings
from test_gui_print_size import stroke

from noisebrush.engine.backends.base import ModelInfo
from noisebrush.engine.downloads import STAGING
from noisebrush.engine.engine import Engine
from noisebrush.engine.packs import load_packs

BLOB = bytes(range(256)) * 8192  # 2 MiB


@pytest.fixture
def hub(monkeypatch, tmp_path):
    stub = HubStub()
    monkeypatch.setenv("HF_ENDPOINT", stub.url)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_TOKEN", "")
    stub.add("owner/model", "model.safetensors", BLOB)
    stub.add("owner/nets", "control_v11p_sd15_scribble.safetensors", b"net")
    files = [{"repo": "owner/model", "path": "model.safetensors", "dest": "model.safetensors", "size": len(BLOB),
              "role": "base", "select": True},
             {"repo": "owner/nets", "path": "control_v11p_sd15_scribble.safetensors",
              "dest": "controlnet/control_v11p_sd15_scribble.safetensors", "size": 3, "role": "controlnet",
              "kind": "scribble"}]  # fmt: skip
    (tmp_path / "packs.json").write_text(json.dumps({"packs": [
        dict(id="sd15", title="Tiny SD1.5", family="sd15", licence="MIT", gated=False, files=files)]}))  # fmt: skip
    monkeypatch.setattr("noisebrush.gui.packs_dialog.load_packs", lambda: load_packs(tmp_path / "packs.json"))
    yield stub
    stub.close()


def test_a_first_start_offers_the_packs_once(qtbot, tmp_path, hub):
    QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat).setValue("packs_offered", False)  # a first start
    w = open_window(qtbot, tmp_path, Engine(FakeBackend()))
    qtbot.waitUntil(lambda: w.banner.isVisible() and w.banner.action.text() == "Get models…", timeout=5000)
    assert "embedded model" in w.banner.label.text()
    w.banner.action.click()
    dlg = w.files._download_dialog
    assert [p.id for p in dlg.chosen()] == ["sd15"]  # the SD1.5 pack comes ticked
    dlg.reject()
    w.close()
    again = open_window(qtbot, tmp_path, Engine(FakeBackend()))
    qtbot.wait(300)
    assert not again.banner.isVisible()  # once only
    again.close()


def test_get_models_cancels_resumes_and_selects_the_model(qtbot, tmp_path, hub):
    models = tmp_path / "models"
    w = open_window(qtbot, tmp_path, Engine(FakeBackend()))
    w.settings.setValue("models_dir", str(models))
    try:
        dlg = w.files.packs_dialog("sd15")
        assert "not installed" in dlg.list.item(0).text() and "free" in dlg.folder.text()
        hub.delay_s = 0.02  # 32 pieces of 64 KiB: about 0.6 s
        seen = []
        dlg.progressed.connect(seen.append)
        dlg.start_btn.click()
        qtbot.waitUntil(lambda: bool(seen), timeout=5000)
        assert dlg.start_btn.text() == "Cancel download"
        dlg.start_btn.click()  # cancel
        qtbot.waitUntil(lambda: dlg.task is None, timeout=5000)
        assert "cancelled" in dlg.status.text()
        assert not (models / "model.safetensors").exists() and not list((models / STAGING).rglob("*.part"))
        hub.delay_s = 0.0
        hub.cut_once.add(("owner/model", "model.safetensors"))  # the line drops halfway
        dlg.start_btn.click()
        qtbot.waitUntil(lambda: dlg.task is None, timeout=5000)
        assert "resumes where it stopped" in dlg.status.text()
        seen.clear()
        with qtbot.waitSignal(dlg.installed, timeout=5000) as got:
            dlg.start_btn.click()
        assert (models / "model.safetensors").read_bytes() == BLOB
        assert seen[-1].index == seen[-1].files == 2 and dlg.total_bar.value() == 1000
        assert "installed" in dlg.list.item(0).text() and "Done" in dlg.status.text()
        assert got.args[0] == str(models / "model.safetensors") == w.state.settings.model  # selected
        assert str(models / "model.safetensors") in w.bridge.engine.backend.preloaded  # and loading
        dlg.reject()
    finally:
        w.close()


def test_each_layer_finds_the_folders_controlnet_of_its_kind(qtbot, tmp_path):
    w = open_window(qtbot, tmp_path, Engine(FakeBackend()))
    try:
        w.state.set_models([ModelInfo("", "Embedded", "base", "sd15", control_kinds=("scribble", "depth", "pose")),
                            ModelInfo("/m/dream.safetensors", "Dream", "base", "sd15"),
                            ModelInfo("/m/xl.safetensors", "XL", "base", "sdxl"),
                            ModelInfo("/m/controlnet/control_v11p_sd15_scribble.safetensors", "scribble", "controlnet",
                                      "sd15", "scribble"),
                            ModelInfo("/m/controlnet/controlnet-union-sdxl-promax", "union", "controlnet", "sdxl")])  # fmt: skip
        w.state.update(model="/m/dream.safetensors")
        assert w.state.folder_controlnet("scribble") == "/m/controlnet/control_v11p_sd15_scribble.safetensors"
        assert w.state.folder_controlnet("depth") == ""  # none of that kind: the engine's sentence says so
        stroke(w, "scribble")
        sent = {c.kind: c.model for c in w.state.capture_request().controls}
        assert sent["scribble"] == "/m/controlnet/control_v11p_sd15_scribble.safetensors"  # the request says which
        w.state.update(model="/m/xl.safetensors")
        assert w.state.folder_controlnet("depth") == "/m/controlnet/controlnet-union-sdxl-promax"  # the Union serves
        w.state.update(model="")
        assert w.state.folder_controlnet("canny") == ""  # no full-size ControlNet fits the embedded model
    finally:
        w.close()
