"""Model packs: the shipped list is sound, and a pack downloads from a Hub stand-in on 127.0.0.1 with progress,
resumes after a cut, refuses a damaged file, asks for a token for a gated repo, stops on a full disk or a cancel
with nothing partial left in the models folder."""

from __future__ import annotations

import json
import threading

import pytest
from hub_stub import GOOD_TOKEN, HubStub

from noisebrush.engine import downloads, packs
from noisebrush.engine.controls import kind_from_name
from noisebrush.engine.downloads import STAGING, download_pack
from noisebrush.engine.errors import GatedError, UserError
from noisebrush.engine.packs import load_packs, pack_state

BLOB = bytes(range(256)) * 4096  # 1 MiB: a few chunks
SMALL = b'{"a": 1}'


@pytest.fixture
def hub(monkeypatch):
    stub = HubStub()
    monkeypatch.setenv("HF_ENDPOINT", stub.url)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # the suite runs offline; this stand-in is local
    monkeypatch.setenv("HF_TOKEN", "")  # no token from the developer's own machine
    yield stub
    stub.close()


def write_list(tmp_path, packs_: list[dict]):
    path = tmp_path / "packs.json"
    path.write_text(json.dumps({"packs": packs_}))
    return load_packs(path)


def one_pack(tmp_path, hub: HubStub, *, sha: str | None = None, gated: bool = False) -> packs.Pack:
    real = hub.add("owner/model", "model.safetensors", BLOB)
    hub.add("owner/nets", "control_v11p_sd15_scribble.safetensors", SMALL)
    files = [
        {"repo": "owner/model", "path": "model.safetensors", "dest": "model.safetensors", "size": len(BLOB),
         "sha256": sha or real, "role": "base", "select": True},
        {"repo": "owner/nets", "path": "control_v11p_sd15_scribble.safetensors",
         "dest": "controlnet/control_v11p_sd15_scribble.safetensors", "size": len(SMALL), "role": "controlnet",
         "kind": "scribble"},
    ]  # fmt: skip
    if gated:
        hub.gated.add("owner/model")
    pack = dict(id="p", title="Test pack", family="sd15", licence="MIT", gated=gated, files=files)
    return write_list(tmp_path, [pack])["p"]


def leftovers(models) -> list[str]:
    staging = models / STAGING
    return sorted(p.name for p in staging.rglob("*") if p.is_file()) if staging.exists() else []


def test_the_shipped_list_is_sound():
    found = load_packs()
    assert {"sd15", "sdxl", "flux-schnell", "flux-dev", "sd35-medium", "upscaler"} <= set(found)
    sd15 = found["sd15"]
    kinds = {f.kind for f in sd15.files if f.role == "controlnet"}
    assert {"scribble", "depth", "pose", "canny", "lineart", "tile"} <= kinds
    assert any(f.role == "lora" for f in sd15.files) and sd15.selected is not None and sd15.selected.role == "base"
    for pack in found.values():
        assert pack.licence and pack.size > 0
        for f in pack.files:
            if f.kind:  # the name says the kind, so the layer finds it by itself once it is in
                assert kind_from_name(f.dest.rsplit("/", 1)[-1]) == f.kind, f.dest
    assert found["flux-dev"].gated and found["sd35-medium"].gated and not found["flux-schnell"].gated
    assert "Non-Commercial" in found["flux-dev"].licence


@pytest.mark.parametrize("bad, why", [({"dest": "../evil.safetensors"}, "not a path inside"),
                                      ({"path": "x.ckpt", "dest": "x.ckpt"}, "pickle"),
                                      ({"sha256": "abc"}, "64 hex")])  # fmt: skip
def test_a_malformed_list_is_refused_with_a_sentence(tmp_path, bad, why):
    entry = {"repo": "o/r", "path": "m.safetensors", "dest": "m.safetensors", "size": 1, "role": "base", **bad}
    with pytest.raises(UserError, match=why):
        write_list(tmp_path, [dict(id="p", title="t", licence="l", gated=False, files=[entry])])


def test_a_pack_downloads_with_progress_and_is_installed(tmp_path, hub):
    pack, models = one_pack(tmp_path, hub), tmp_path / "models"
    assert pack_state(pack, models) == (0, 2)
    seen = []
    paths = download_pack(pack, models, seen.append)
    assert [p.read_bytes() for p in paths] == [BLOB, SMALL]
    assert pack_state(pack, models) == (2, 2) and leftovers(models) == []
    assert seen[-1].done == seen[-1].total == len(BLOB) + len(SMALL) and seen[-1].index == seen[-1].files == 2
    assert len({s.file_done for s in seen if s.index == 1}) > 2  # the big file reported as it came
    assert download_pack(pack, models) == []  # nothing left to fetch


def test_a_cut_download_resumes_where_it_stopped(tmp_path, hub):
    pack, models = one_pack(tmp_path, hub), tmp_path / "models"
    hub.cut_once.add(("owner/model", "model.safetensors"))
    with pytest.raises(UserError, match="resumes where it stopped"):
        download_pack(pack, models)
    assert not (models / "model.safetensors").exists()  # nothing partial in the models folder itself
    kept = (models / STAGING / "model.safetensors.part").stat().st_size
    assert 0 < kept < len(BLOB)
    download_pack(pack, models)
    assert (models / "model.safetensors").read_bytes() == BLOB
    assert ("/owner/model/resolve/main/model.safetensors", f"bytes={kept}-", None) in hub.requests
    assert leftovers(models) == []


@pytest.mark.parametrize("how", ["catalog", "hub"])
def test_a_damaged_file_is_refused_and_deleted(tmp_path, hub, how):
    pack = one_pack(tmp_path, hub, sha="0" * 64 if how == "catalog" else None)
    if how == "hub":  # no checksum in the list: the Hub's LFS one is checked
        pack = packs.Pack(pack.id, pack.title, pack.family, pack.licence, pack.gated, pack.description,
                          tuple(packs.PackFile(f.repo, f.path, f.dest, f.size, f.role, None, f.kind, f.select)
                                for f in pack.files))  # fmt: skip
        hub.wrong_etag.add(("owner/model", "model.safetensors"))
    models = tmp_path / "models"
    with pytest.raises(UserError, match="arrived damaged"):
        download_pack(pack, models)
    assert not (models / "model.safetensors").exists() and leftovers(models) == []


def test_a_gated_repo_asks_for_a_token_and_never_shows_it(tmp_path, hub):
    pack, models = one_pack(tmp_path, hub, gated=True), tmp_path / "models"
    with pytest.raises(GatedError, match="give Noisebrush your Hugging Face token"):
        download_pack(pack, models)
    with pytest.raises(GatedError, match="refused") as bad:
        download_pack(pack, models, token="hf_wrong")
    assert "hf_wrong" not in str(bad.value)
    download_pack(pack, models, token=GOOD_TOKEN)
    assert (models / "model.safetensors").read_bytes() == BLOB


def test_a_saved_token_goes_to_the_hub_tools_token_file(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf" / "token"))
    path = downloads.save_token(" hf_abc \n")
    assert path.read_text() == "hf_abc" and (path.stat().st_mode & 0o077) == 0


def test_a_full_disk_stops_before_anything_is_written(tmp_path, hub, monkeypatch):
    pack, models = one_pack(tmp_path, hub), tmp_path / "models"
    monkeypatch.setattr(downloads, "free_bytes", lambda folder: 10_000)
    with pytest.raises(UserError, match="not enough disk space for Test pack"):
        download_pack(pack, models)
    assert leftovers(models) == [] and not (models / "model.safetensors").exists()
    assert not any(p for p, _, _ in hub.requests if "/resolve/" in p)  # refused before asking for a byte


def test_cancel_stops_and_leaves_nothing(tmp_path, hub):
    pack, models = one_pack(tmp_path, hub), tmp_path / "models"
    stop = threading.Event()

    def progress(p) -> None:
        if p.file_done > 0:
            stop.set()

    with pytest.raises(downloads.Cancelled):
        download_pack(pack, models, progress, stop)
    assert leftovers(models) == [] and not (models / "model.safetensors").exists()


def test_offline_says_so_in_one_sentence(tmp_path, hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="offline"):
        download_pack(one_pack(tmp_path, hub), tmp_path / "models")


def test_a_dead_server_is_one_sentence(tmp_path, hub, monkeypatch):
    pack = one_pack(tmp_path, hub)
    hub.close()
    with pytest.raises(UserError, match="cannot reach 127.0.0.1"):
        download_pack(pack, tmp_path / "models")


def test_a_folder_pack_gets_one_precision_of_the_pipeline(tmp_path, hub):
    for path, data in {"model_index.json": SMALL, "unet/config.json": SMALL, "unet/diffusion_pytorch_model.safetensors":
                       BLOB[:1000], "unet/diffusion_pytorch_model.fp16.safetensors": BLOB[:500],
                       "big_checkpoint.safetensors": BLOB}.items():  # fmt: skip
        hub.add("owner/pipe", path, data)
    entry = {"repo": "owner/pipe", "dest": "Pipe", "size": 2000, "role": "base", "select": True}
    pack = write_list(tmp_path, [dict(id="f", title="Folder", licence="l", gated=False, folders=[entry])])["f"]
    models = tmp_path / "models"
    download_pack(pack, models)
    got = sorted(str(p.relative_to(models / "Pipe")) for p in (models / "Pipe").rglob("*") if p.is_file())
    assert got == ["model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors"]
    assert pack_state(pack, models) == (1, 1)


def test_a_gated_folder_pack_asks_for_the_token_too(tmp_path, hub):
    hub.add("owner/gated", "model_index.json", SMALL)
    hub.gated.add("owner/gated")
    entry = {"repo": "owner/gated", "dest": "Gated", "size": 10, "role": "base"}
    pack = write_list(tmp_path, [dict(id="g", title="Gated", licence="l", gated=True, folders=[entry])])["g"]
    with pytest.raises(GatedError, match="token"):
        download_pack(pack, tmp_path / "models", token="hf_wrong")
    download_pack(pack, tmp_path / "models", token=GOOD_TOKEN)
    assert (tmp_path / "models" / "Gated" / "model_index.json").read_bytes() == SMALL


def test_the_command_line_lists_offline_and_downloads_with_a_bar(tmp_path, hub, monkeypatch, capsys):
    from noisebrush.cli import main

    models = tmp_path / "models"
    (models / "upscale_models").mkdir(parents=True)
    (models / "upscale_models" / "OmniSR_X4_DIV2K.safetensors").write_bytes(b"x")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["download", "--list", "--dir", str(models)]) == 0
    listed = capsys.readouterr().out
    assert "sd15" in listed and "upscaler" in listed.split("sd35-medium")[1] and "installed" in listed
    assert [ln for ln in listed.splitlines() if ln.strip().startswith("upscaler")][0].split()[3] == "installed"
    assert "needs your Hugging Face token" in [ln for ln in listed.splitlines() if "flux-dev" in ln][0]
    assert main(["download", "sd15", "--dir", str(models)]) == 2
    assert "offline" in capsys.readouterr().err
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(packs, "assets_dir", lambda: tmp_path)
    (tmp_path / "model_packs.json").write_text(json.dumps({"packs": [dict(
        id="tiny", title="Tiny", licence="MIT", gated=False,
        files=[{"repo": "owner/model", "path": "model.safetensors", "dest": "model.safetensors", "size": len(BLOB),
                "role": "base", "select": True}])]}))  # fmt: skip
    hub.add("owner/model", "model.safetensors", BLOB)
    assert main(["download", "tiny", "--dir", str(models)]) == 0
    out = capsys.readouterr().out
    assert "100.0 %" in out and "tiny: 1 files downloaded" in out and (models / "model.safetensors").is_file()
