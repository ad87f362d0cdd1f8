"""Transformer-only SD3 and Flux files (flux1-dev.safetensors, sd3.5_large.safetensors) and city96-style GGUF
transformers run with the text encoders and VAE of a diffusers folder of their family found on this computer (a
companion): listed as usable with it, the same picture as the folder itself, and a clear way out without one."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from flow_export import flux_converter_any_width, write_flux_file, write_gguf, write_sd3_file, write_transformer_only
from helpers import circle_sketch
from PIL import Image
from tiny_flow import flux_controlnet

from noisebrush.cli import main
from noisebrush.engine import catalog, companions
from noisebrush.engine.catalog import scan
from noisebrush.engine.memory import folder_parts, footprint

FLUX_WAY_OUT = "put the diffusers folder of FLUX.1-dev (or schnell) in your models folder"


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """models/ with FLUX.1-dev and sd3-medium diffusers folders, and transformer-only files of the same weights:
    flux1-dev.safetensors (BFL's keys), sd3_medium.safetensors (Stability's), and GGUFs in F16 and Q8_0."""
    root = tmp_path_factory.mktemp("companion")
    models, aio = root / "models", root / "all-in-one"
    aio.mkdir()
    flux = write_flux_file(aio / "flux.safetensors", root / "configs", folder=models / "FLUX.1-dev")
    sd3 = write_sd3_file(aio / "sd3.safetensors", root / "configs", folder=models / "sd3-medium")
    write_transformer_only(flux, models / "flux1-dev.safetensors", strip_prefix=True)
    write_transformer_only(sd3, models / "sd3_medium.safetensors", strip_prefix=False)
    write_gguf(models / "flux1-dev.safetensors", models / "flux1-dev-F16.gguf", "flux")
    write_gguf(models / "flux1-dev.safetensors", models / "flux1-dev-Q8_0.gguf", "flux", "Q8_0")
    write_gguf(models / "sd3_medium.safetensors", models / "sd3_medium-F16.gguf", "sd3")
    flux_controlnet().save_pretrained(root / "flux-scribble")  # the widths of write_flux_file's transformer
    return models


@pytest.fixture()
def here(models, tmp_path, monkeypatch) -> Path:
    """This computer: the tiny models folder, the tiny shapes' configs, an empty Hugging Face cache, no folders
    scanned before, and diffusers' Flux converter made to read the tiny width."""
    import huggingface_hub.constants
    from diffusers.loaders.single_file_model import SINGLE_FILE_LOADABLE_CLASSES

    monkeypatch.setenv("NOISEBRUSH_MODELS", str(models))
    monkeypatch.setenv("NOISEBRUSH_SINGLE_FILE_CONFIGS", str(models.parent / "configs"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(companions, "_scanned_roots", [])
    entry = SINGLE_FILE_LOADABLE_CLASSES["FluxTransformer2DModel"]
    monkeypatch.setitem(entry, "checkpoint_mapping_fn", flux_converter_any_width())
    return models


def test_transformer_only_files_are_listed_usable_with_their_companion(here):
    entries = {e.name: e for e in scan(here)}
    files = (
        "flux1-dev.safetensors",
        "flux1-dev-F16.gguf",
        "flux1-dev-Q8_0.gguf",
        "sd3_medium.safetensors",
        "sd3_medium-F16.gguf",
    )
    for name in files:
        e = entries[name]
        assert e.usable and e.role == "base", (name, e.note)
        companion = "FLUX.1-dev" if name.startswith("flux") else "sd3-medium"
        assert e.detail == f"text encoders and VAE from {companion}" and e.companion == here / companion
    assert (entries["flux1-dev-Q8_0.gguf"].format, entries["flux1-dev-Q8_0.gguf"].family) == ("gguf", "flux")
    table = catalog.format_table(list(entries.values()))
    assert "text encoders and VAE from FLUX.1-dev; needs" in table


def test_a_gguf_needs_its_quantized_size_plus_the_companions_parts(here):
    entries = {e.name: e for e in scan(here)}
    lent = sum(v for k, v in folder_parts(here / "FLUX.1-dev").items() if k != "transformer")
    needs = {}
    for name in ("flux1-dev-F16.gguf", "flux1-dev-Q8_0.gguf"):
        e = entries[name]
        needs[name] = footprint(e.path, e.family, e.companion).weights - lent
        assert 0.9 * e.size_bytes < needs[name] <= e.size_bytes  # the stored tensors, not 2 bytes a parameter
    assert needs["flux1-dev-Q8_0.gguf"] < 0.75 * needs["flux1-dev-F16.gguf"]


def test_without_gguf_installed_a_gguf_file_says_what_to_install(here, monkeypatch):
    monkeypatch.setattr(catalog, "gguf_available", lambda: False)
    e = next(e for e in scan(here) if e.name == "flux1-dev-Q8_0.gguf")
    assert not e.usable and e.note == "GGUF files need the gguf package: install noisebrush[gguf]"


def test_a_cached_hub_snapshot_serves_as_companion(here, tmp_path, monkeypatch):
    monkeypatch.setenv("NOISEBRUSH_MODELS", str(tmp_path / "empty"))
    lonely = tmp_path / "a" / "b"
    lonely.mkdir(parents=True)
    shutil.copy(here / "flux1-dev.safetensors", lonely)
    snapshot = tmp_path / "hub" / "models--black-forest-labs--FLUX.1-schnell" / "snapshots" / "abc123"
    shutil.copytree(here / "FLUX.1-dev", snapshot)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("abc123")
    found = companions.find_companion(lonely / "flux1-dev.safetensors", "flux")
    assert found is not None and (found.path, found.name) == (snapshot, "black-forest-labs/FLUX.1-schnell")


def test_without_a_companion_the_file_says_what_to_get(here, lonely_folder, tmp_path, capsys):
    lonely = lonely_folder
    for name in ("flux1-dev.safetensors", "flux1-dev-Q8_0.gguf"):
        shutil.copy(here / name, lonely)
    notes = {e.name: e.note for e in scan(lonely)}
    assert notes["flux1-dev.safetensors"] == (
        f"Flux transformer only, without its VAE and text encoders (CLIP-L, T5-XXL): {FLUX_WAY_OUT}"
    )
    assert notes["flux1-dev-Q8_0.gguf"] == notes["flux1-dev.safetensors"]
    code = main(["generate", "--prompt", "x", "--model", str(lonely / "flux1-dev-Q8_0.gguf"), "--out",
                 str(tmp_path / "o.png")])  # fmt: skip
    assert code == 2 and FLUX_WAY_OUT in capsys.readouterr().err


def _generate(model: Path, out: Path, capsys, *flags: str) -> np.ndarray:
    previews = out.with_suffix("")
    code = main(["generate", "--prompt", "a red circle", "--model", str(model), "--steps", "3", "--width", "64",
                 "--height", "64", "--seed", "3", "--previews", str(previews), "--out", str(out), *flags])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert len(list(previews.iterdir())) == 3  # a preview per step
    return np.asarray(Image.open(out)).astype(int)


@pytest.mark.parametrize(("file", "folder", "levels"), [
    ("flux1-dev.safetensors", "FLUX.1-dev", 1),  # the same weights, converted back by diffusers
    ("sd3_medium.safetensors", "sd3-medium", 1),
    ("flux1-dev-F16.gguf", "FLUX.1-dev", 3),  # weights rounded to 16 bits
    ("sd3_medium-F16.gguf", "sd3-medium", 3),
])  # fmt: skip
def test_a_transformer_only_file_generates_what_its_companion_folder_does(here, tmp_path, capsys, file, folder, levels):
    got = _generate(here / file, tmp_path / "file.png", capsys)
    want = _generate(here / folder, tmp_path / "folder.png", capsys)
    assert got.shape == (64, 64, 3)
    assert np.abs(got - want).max() <= levels


def test_a_transformer_only_file_takes_controlnets_as_its_companion_folder_does(here, tmp_path, capsys):
    Image.fromarray(circle_sketch()).save(tmp_path / "s.png")
    control = ["--control", f"scribble={tmp_path / 's.png'}", "--controlnet", f"scribble={here.parent / 'flux-scribble'}"]
    got = _generate(here / "flux1-dev.safetensors", tmp_path / "file.png", capsys, *control)
    want = _generate(here / "FLUX.1-dev", tmp_path / "folder.png", capsys, *control)
    plain = _generate(here / "flux1-dev.safetensors", tmp_path / "plain.png", capsys)
    assert np.abs(got - want).max() <= 1 and np.abs(got - plain).mean() > 1


def test_a_q8_gguf_generates_close_to_the_unquantized_model(here, tmp_path, capsys):
    got = _generate(here / "flux1-dev-Q8_0.gguf", tmp_path / "q8.png", capsys)
    want = _generate(here / "FLUX.1-dev", tmp_path / "folder.png", capsys)
    assert np.abs(got - want).mean() < 2 and np.abs(got - want).max() <= 12  # 8-bit blocks: close, not equal


def test_a_gguf_transformer_stays_quantized_and_borrows_the_rest(here):
    import torch
    from transformers import CLIPTextModel

    from noisebrush.engine.device import DeviceChoice
    from noisebrush.engine.models import load_base, model_defaults

    model = load_base(str(here / "flux1-dev-Q8_0.gguf"), DeviceChoice("cpu", "float32"))
    layers = [type(m).__name__ for m in model.components["transformer"].modules()]
    assert model.family == "flux" and "GGUFLinear" in layers  # dequantized layer by layer as it runs, not at load
    lent = CLIPTextModel.from_pretrained(here / "FLUX.1-dev" / "text_encoder").state_dict()
    got = model.components["text_encoder"].state_dict()
    assert all(torch.equal(got[k], lent[k]) for k in lent)
    assert model_defaults(str(here / "flux1-dev-Q8_0.gguf")).guidance_kind == "distilled"  # dev: a guidance embedding


def test_the_catalog_finds_companions_and_reads_ggufs_without_torch(here):
    import subprocess
    import sys

    code = ("import sys\nfrom pathlib import Path\nfrom noisebrush.engine.catalog import format_table, scan\n"
            f"table = format_table(scan(Path({str(here)!r})))\nassert 'text encoders and VAE from FLUX.1-dev' in table\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'diffusers', 'transformers'}))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr or out.stdout
