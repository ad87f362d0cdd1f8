"""Bring your own models: Hub ids from the cache, damaged and pickle files, the models folder scan, memory options."""

from __future__ import annotations

import shutil
import struct
import time
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from tiny_model import tiny_controlnet, tiny_unet

from engine.catalog import format_table, scan
from engine.errors import UserError
from engine.sources import check_safetensors, download_snapshot, resolve_source
from noisebrush.cli import main

REV = "f" * 40


def into_hub_cache(model_dir: str, cache: Path, repo: str) -> Path:
    """Copy a model folder into the standard HF cache layout: models--org--name/snapshots/<rev>/ + refs/main."""
    root = cache / ("models--" + repo.replace("/", "--"))
    snap = root / "snapshots" / REV
    shutil.copytree(model_dir, snap)
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(REV)
    return snap


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_a_cached_hub_id_loads_offline_and_generates(tiny_model, hub_cache, tmp_path, capsys):
    into_hub_cache(tiny_model, hub_cache, "someone/tiny-sd")
    out = tmp_path / "out.png"
    assert (
        main(
            [
                "generate",
                "--prompt",
                "x",
                "--model",
                "someone/tiny-sd",
                "--steps",
                "2",
                "--previews",
                str(tmp_path / "p"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert out.exists() and len(list((tmp_path / "p").iterdir())) == 2


def test_an_uncached_hub_id_fails_at_once_offline(hub_cache, tmp_path, capsys):
    t0 = time.perf_counter()
    assert main(["generate", "--prompt", "x", "--model", "nobody/not-here", "--out", str(tmp_path / "o.png")]) == 2
    assert time.perf_counter() - t0 < 5
    err = capsys.readouterr().err
    assert "nobody/not-here is not in the local Hugging Face cache" in err and "offline" in err


def test_download_progress_and_cancel_with_a_fake_downloader(tmp_path):
    seen = []

    def fake_snapshot(repo, cache_dir=None, allow_patterns=None, tqdm_class=None):
        assert "*.safetensors" in allow_patterns and "*.ckpt" not in allow_patterns
        bar = tqdm_class(total=5_000_000, unit="B", disable=True)
        for _ in range(5):
            bar.update(1_000_000)
        return str(tmp_path)

    assert download_snapshot("org/m", progress=lambda d, t: seen.append((d, t)), fetch=fake_snapshot) == tmp_path
    assert seen[-1] == (5_000_000, 5_000_000) and len(seen) == 5
    import threading

    stop = threading.Event()
    stop.set()
    with pytest.raises(UserError, match="cancelled"):
        download_snapshot("org/m", cancelled=stop, fetch=fake_snapshot)


def test_download_progress_reaches_the_gui(qtbot, tmp_path, tiny_model):
    from gui.download_dialog import DownloadDialog

    def slow_fake(repo, cache_dir=None, allow_patterns=None, tqdm_class=None):
        bar = tqdm_class(total=4_000_000, unit="B", disable=True)
        for _ in range(4):
            time.sleep(0.05)
            bar.update(1_000_000)
        return str(tmp_path)

    dlg = DownloadDialog(None, "org/model", fetch=slow_fake)
    qtbot.addWidget(dlg)
    formats = []
    dlg.bar.valueChanged.connect(lambda v: formats.append(dlg.bar.format()))
    with qtbot.waitSignal(dlg.downloaded, timeout=10000) as got:
        dlg.start()
    assert got.args == ["org/model"]
    assert any("/ 4.0 MB" in f and "MB/s" in f for f in formats)
    assert dlg.task.join(5)


def _write_safetensors(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


def test_truncated_or_corrupt_safetensors_give_a_clear_error(tmp_path, capsys):
    good = _write_safetensors(tmp_path / "model.safetensors", {"model.diffusion_model.x": torch.zeros(1000)})
    check_safetensors(good)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:-1000])
    with pytest.raises(UserError, match="truncated"):
        resolve_source(str(truncated))
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(struct.pack("<Q", 50) + b"{not json at all" + b"\0" * 100)
    with pytest.raises(UserError, match="not a valid .safetensors"):
        resolve_source(str(corrupt))
    assert main(["generate", "--prompt", "x", "--model", str(truncated), "--out", str(tmp_path / "o.png")]) == 2
    assert "truncated" in capsys.readouterr().err


def test_pickle_checkpoints_are_refused_with_the_reason(tmp_path, capsys):
    ckpt = tmp_path / "v1-5-pruned.ckpt"
    torch.save({"state_dict": {}}, ckpt)
    assert main(["generate", "--prompt", "x", "--model", str(ckpt), "--out", str(tmp_path / "o.png")]) == 2
    err = capsys.readouterr().err
    assert "pickle" in err and "can run any code" in err and ".safetensors" in err


def test_scan_finds_and_classifies_models(tiny_model, tmp_path, capsys):
    models = tmp_path / "models"
    shutil.copytree(tiny_model, models / "my-sd15")
    tiny_controlnet(tiny_unet(), 1).save_pretrained(models / "controlnets" / "control_depth_tiny")
    tiny_controlnet(tiny_unet(cross_attention_dim=2048), 1).save_pretrained(models / "controlnets" / "xl-openpose")
    _write_safetensors(models / "dreamy.safetensors", {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4),
                                                      "cond_stage_model.transformer.x": torch.zeros(2)})  # fmt: skip
    _write_safetensors(models / "sdxl-base.safetensors", {"conditioner.embedders.1.model.x": torch.zeros(2)})
    _write_safetensors(models / "control_v11p_sd15_scribble.safetensors", {
        "control_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": torch.zeros(320, 768)})  # fmt: skip
    torch.save({}, models / "old.ckpt")
    (models / "notes.txt").write_text("hi")
    entries = {e.name: e for e in scan(models)}
    assert (entries["my-sd15"].role, entries["my-sd15"].family, entries["my-sd15"].format) == ("base", "sd15", "diffusers")
    assert (entries["control_depth_tiny"].role, entries["control_depth_tiny"].control_kind) == ("controlnet", "depth")
    assert (entries["xl-openpose"].family, entries["xl-openpose"].control_kind) == ("sdxl", "pose")
    assert (entries["dreamy.safetensors"].family, entries["dreamy.safetensors"].role) == ("sd15", "base")
    assert entries["sdxl-base.safetensors"].family == "sdxl"
    e = entries["control_v11p_sd15_scribble.safetensors"]
    assert (e.role, e.family, e.control_kind) == ("controlnet", "sd15", "scribble")
    assert not entries["old.ckpt"].usable and "pickle" in entries["old.ckpt"].note
    assert "notes.txt" not in entries
    assert entries["my-sd15"].size_bytes > 100_000
    table = format_table(list(entries.values()))
    assert "controlnet:depth" in table and "SDXL" in table
    assert main(["models", "--dir", str(models)]) == 0
    assert "my-sd15" in capsys.readouterr().out


def test_memory_options_run_on_this_machine(tiny_model, tmp_path):
    from PIL import Image

    def gen(name: str, *flags: str) -> np.ndarray:
        out = tmp_path / f"{name}.png"
        assert (
            main(["generate", "--prompt", "x", "--model", tiny_model, "--steps", "2", "--seed", "1", *flags, "--out", str(out)])
            == 0
        )
        return np.asarray(Image.open(out)).astype(int)

    plain = gen("plain")
    sliced = gen("sliced", "--attention-slicing", "--no-fp16")
    assert np.abs(sliced - plain).max() <= 2  # slicing changes memory use, not the picture
    tiled = gen("tiled", "--vae-tiling", "--cpu-offload")  # offload needs CUDA: on a CPU it is skipped, not an error
    assert tiled.shape == plain.shape


def test_a_controlnet_folder_is_not_a_base_model(tmp_path, capsys):
    tiny_controlnet(tiny_unet(), 1).save_pretrained(tmp_path / "cn")
    assert main(["generate", "--prompt", "x", "--model", str(tmp_path / "cn"), "--out", str(tmp_path / "o.png")]) == 2
    assert "not a whole pipeline" in capsys.readouterr().err
