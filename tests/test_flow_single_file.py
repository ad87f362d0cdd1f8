"""Single-file SD3 and Flux checkpoints: the bundled real configs, tiny all-in-one files that load offline and give
the same pictures as their diffusers folders (with previews), and files that lack parts named with what they lack."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from flow_export import flux_converter_any_width, write_flux_file, write_sd3_file
from PIL import Image

from noisebrush.cli import main
from noisebrush.engine.catalog import scan
from noisebrush.engine.paths import assets_dir

VARIANTS = {  # bundled folder: pipeline, transformer, parameters (billions) as published
    "sd3": ("StableDiffusion3Pipeline", "SD3Transformer2DModel", 2.03),
    "sd35-medium": ("StableDiffusion3Pipeline", "SD3Transformer2DModel", 2.24),
    "sd35-large": ("StableDiffusion3Pipeline", "SD3Transformer2DModel", 8.06),
    "flux-dev": ("FluxPipeline", "FluxTransformer2DModel", 11.90),
    "flux-schnell": ("FluxPipeline", "FluxTransformer2DModel", 11.90),
}


@pytest.mark.parametrize("name", VARIANTS)
def test_the_bundled_configs_parse_and_build_the_published_models(name):
    import diffusers
    from transformers import AutoConfig

    folder = assets_dir() / "configs" / name
    pipeline, transformer, billions = VARIANTS[name]
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == pipeline and index["transformer"] == ["diffusers", transformer]
    parts = {k: v for k, v in index.items() if isinstance(v, list)}
    for part, (library, cls) in parts.items():
        if part.startswith("text_encoder"):
            assert type(AutoConfig.from_pretrained(folder / part)).__name__ in ("CLIPTextConfig", "T5Config"), part
        elif library == "diffusers" and part != "scheduler":
            cfg = getattr(diffusers, cls).load_config(folder / part)
            assert cfg["_class_name"] == cls
    with torch.device("meta"):  # the real sizes, no memory
        cls = getattr(diffusers, transformer)
        model = cls.from_config(cls.load_config(folder / "transformer"))
    assert abs(sum(p.numel() for p in model.parameters()) / 1e9 - billions) < 0.05
    sched = diffusers.FlowMatchEulerDiscreteScheduler.from_pretrained(folder / "scheduler")
    assert sched.config.use_dynamic_shifting == (name == "flux-dev")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("single")
    models, configs = root / "models", root / "configs"
    models.mkdir()
    return {
        "sd3": write_sd3_file(models / "tiny-sd3.safetensors", configs, folder=root / "sd3-folder"),
        "flux": write_flux_file(models / "tiny-flux.safetensors", configs, folder=root / "flux-folder"),
    }


@pytest.fixture()
def tiny_configs(files, monkeypatch) -> None:
    """The tiny shapes' configs, and diffusers' Flux converter made to read the tiny width."""
    from diffusers.loaders.single_file_model import SINGLE_FILE_LOADABLE_CLASSES

    monkeypatch.setenv("NOISEBRUSH_SINGLE_FILE_CONFIGS", str(files["sd3"].parent.parent / "configs"))
    entry = SINGLE_FILE_LOADABLE_CLASSES["FluxTransformer2DModel"]
    monkeypatch.setitem(entry, "checkpoint_mapping_fn", flux_converter_any_width())


def test_all_in_one_files_are_listed_by_family_with_their_defaults(files, tiny_configs):
    from noisebrush.engine.models import model_defaults

    entries = {e.name: e for e in scan(files["sd3"].parent)}
    assert [(e.family, e.role, e.usable) for e in entries.values()] == [("flux", "base", True), ("sd3", "base", True)]
    d = model_defaults(str(files["flux"]))
    assert (d.width, d.steps, d.guidance_kind, d.scheduler) == (1024, 28, "distilled", "Euler")
    assert model_defaults(str(files["sd3"])).guidance_kind == "cfg"


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_a_single_file_generates_what_its_diffusers_folder_does_with_previews(files, tiny_configs, family, tmp_path, capsys):
    outs = []
    for model in (files[family], files[family].parent.parent / f"{family}-folder"):
        out, previews = tmp_path / f"{model.stem}.png", tmp_path / f"p-{model.stem}"
        code = main(["generate", "--prompt", "a red circle", "--model", str(model), "--steps", "3", "--width", "64",
                     "--height", "64", "--seed", "3", "--previews", str(previews), "--out", str(out)])  # fmt: skip
        assert code == 0, capsys.readouterr().err
        assert len(list(previews.iterdir())) == 3
        outs.append(np.asarray(Image.open(out)).astype(int))
    assert outs[0].shape == (64, 64, 3)
    assert np.abs(outs[0] - outs[1]).max() <= 1  # the same weights, converted back by diffusers


def test_files_without_their_text_encoders_or_vae_say_what_they_lack(lonely_folder, capsys):
    from safetensors.torch import save_file

    tmp_path = lonely_folder  # no diffusers folder of either family anywhere a companion is looked for
    t = torch.zeros(2, 2)
    files = {  # the key names of the published files
        "flux1-dev.safetensors": {"double_blocks.0.img_attn.qkv.weight": t, "guidance_in.in_layer.weight": t},
        "sd3.5_large.safetensors": {"model.diffusion_model.joint_blocks.37.x_block.mlp.fc1.weight": t,
                                    "first_stage_model.decoder.conv_in.weight": t},
        "sd3_medium_incl_clips.safetensors": {"model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight": t,
                                              "first_stage_model.decoder.conv_in.weight": t,
                                              "text_encoders.clip_l.transformer.x": t},
        "flux1-fill-dev.safetensors": {"double_blocks.0.img_attn.qkv.weight": t, "img_in.weight": torch.zeros(2, 384)},
    }  # fmt: skip
    for name, tensors in files.items():
        save_file({k: v.clone() for k, v in tensors.items()}, str(tmp_path / name))
    notes = {e.name: e.note for e in scan(tmp_path) if not e.usable}
    sd3_way_out = "put the diffusers folder of SD3.5 Large, SD3.5 Medium or SD3 Medium in your models folder"
    assert notes == {
        "flux1-dev.safetensors": "Flux transformer only, without its VAE and text encoders (CLIP-L, T5-XXL): put the "
        "diffusers folder of FLUX.1-dev (or schnell) in your models folder",
        "sd3.5_large.safetensors": f"SD3 transformer only, without its text encoders (CLIP-L, CLIP-G): {sd3_way_out}",
        "sd3_medium_incl_clips.safetensors": f"SD3 transformer only, without its text encoder (CLIP-G): {sd3_way_out}",
        "flux1-fill-dev.safetensors": "a Flux Fill or Depth/Canny checkpoint (384 input channels): not supported yet",
    }  # fmt: skip
    code = main(["generate", "--prompt", "x", "--model", str(tmp_path / "flux1-dev.safetensors"), "--out",
                 str(tmp_path / "o.png")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "flux1-dev.safetensors: Flux transformer only, without its VAE" in err
    assert [line for line in err.splitlines() if not line.startswith("loading model")] == [err.splitlines()[-1]]
