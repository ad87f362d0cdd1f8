"""Bring your own models: Hub ids from the cache, damaged and pickle files, the models folder scan, memory options."""

from __future__ import annotations

import json
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

from noisebrush.cli import main
from noisebrush.engine.catalog import format_table, scan
from noisebrush.engine.errors import UserError
from noisebrush.engine.sources import check_safetensors, download_snapshot, resolve_source

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


SD15_REPO = {  # the shape of a typical SD1.5 repo: a pipeline plus root checkpoints in several precisions
    "model_index.json": 600, "unet/config.json": 1_500, "vae/config.json": 600, "text_encoder/config.json": 600,
    "tokenizer/vocab.json": 1_000_000, "tokenizer/merges.txt": 500_000, "scheduler/scheduler_config.json": 300,
    "unet/diffusion_pytorch_model.safetensors": 1_720_000_000, "unet/diffusion_pytorch_model.fp16.safetensors": 860_000_000,
    "vae/diffusion_pytorch_model.safetensors": 167_000_000, "vae/diffusion_pytorch_model.fp16.safetensors": 84_000_000,
    "text_encoder/model.fp16.safetensors": 246_000_000, "text_encoder/model.safetensors": 492_000_000,
    "v1-5-pruned.safetensors": 7_700_000_000, "v1-5-pruned-emaonly.safetensors": 4_270_000_000,
}  # fmt: skip


def test_a_download_takes_one_precision_of_each_part_and_no_root_checkpoints():
    from noisebrush.engine.sources import plan_download

    plan = plan_download(SD15_REPO)
    weights = [f for f in plan.files if f.endswith(".safetensors")]
    assert weights == ["text_encoder/model.safetensors", "unet/diffusion_pytorch_model.safetensors",
                       "vae/diffusion_pytorch_model.safetensors"]  # fmt: skip
    assert "model_index.json" in plan.files and "tokenizer/vocab.json" in plan.files
    assert plan.total_bytes < 2.4e9 and plan.skipped_bytes > 13e9
    only_fp16 = {k: v for k, v in SD15_REPO.items() if "fp16" in k or not k.endswith(".safetensors")}
    assert "unet/diffusion_pytorch_model.fp16.safetensors" in plan_download(only_fp16).files
    controlnet = {"config.json": 900, "diffusion_pytorch_model.safetensors": 1_400_000_000,
                  "diffusion_pytorch_model.fp16.safetensors": 700_000_000}  # fmt: skip
    assert plan_download(controlnet).files == ("config.json", "diffusion_pytorch_model.safetensors")


def test_download_progress_reaches_the_gui(qtbot, tmp_path, tiny_model):
    from noisebrush.gui.download_dialog import DownloadDialog

    def slow_fake(repo, cache_dir=None, allow_patterns=None, tqdm_class=None):
        bar = tqdm_class(total=4_000_000, unit="B", disable=True)
        for _ in range(4):
            time.sleep(0.05)
            bar.update(1_000_000)
        return str(tmp_path)

    dlg = DownloadDialog(None, "org/model", fetch=slow_fake, list_files=lambda repo: SD15_REPO)
    qtbot.addWidget(dlg)
    dlg.start()  # first the size
    qtbot.waitUntil(lambda: dlg.plan is not None, timeout=10000)
    assert "2.38 GB" in dlg.start_btn.text() and "left out" in dlg.info.text()
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


def test_few_step_models_get_few_step_defaults(tiny_model, tmp_path, hub_cache):
    from noisebrush.engine.models import model_defaults

    lcm = tmp_path / "dreamshaper-lcm"
    shutil.copytree(tiny_model, lcm)
    (lcm / "noisebrush.json").unlink()
    d = model_defaults(str(lcm))
    assert (d.steps, d.guidance, d.scheduler) == (4, 1.0, "LCM")
    into_hub_cache(str(lcm), hub_cache, "someone/sd-turbo-tiny")
    d = model_defaults("someone/sd-turbo-tiny")
    assert (d.steps, d.guidance, d.scheduler) == (4, 0.0, "Euler a")
    plain = tmp_path / "plain"
    shutil.copytree(lcm, plain)
    assert model_defaults(str(plain)).steps == 20


def test_tiny_autoencoder_previews_at_full_resolution(tiny_model, tmp_path):
    from diffusers import AutoencoderTiny
    from helpers import EventLog

    from noisebrush.engine.engine import Engine
    from noisebrush.engine.events import Finished, Preview
    from noisebrush.engine.request import GenerationRequest

    folder = tmp_path / "with-taesd"
    shutil.copytree(tiny_model, folder)
    torch.manual_seed(0)
    AutoencoderTiny(encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8)).save_pretrained(
        folder / "taesd"
    )
    req = GenerationRequest("x", steps=3, seed=1, width=64, height=64, model=str(folder))
    for mode, shape in (("auto", (64, 64, 3)), ("linear", (8, 8, 3))):
        from noisebrush.engine.device import LoadOptions

        with Engine(preview_interval_s=0.0, options=LoadOptions(preview_decoder=mode)) as eng:
            log = EventLog()
            eng.add_listener(log)
            job = eng.submit(req)
            assert isinstance(log.wait_end(job), Finished)
            previews = log.of(job, Preview)
            assert len(previews) == 3 and previews[-1].image.shape == shape, mode


def _tiny_sd15_single_file(tmp_path: Path, monkeypatch) -> tuple[Path, Path]:
    """A tiny SD1.5-shaped checkpoint in the original layout, a tiny ControlNet likewise, and matching configs."""
    from diffusers import DDIMScheduler
    from ldm_export import clip_to_ldm, controlnet_to_ldm, unet_to_ldm, vae_to_ldm
    from tiny_model import tiny_vae
    from transformers import CLIPTextConfig, CLIPTextModel

    from noisebrush.engine.paths import assets_dir

    torch.manual_seed(0)
    text_cfg = CLIPTextConfig(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, vocab_size=49408,
                              max_position_embeddings=77, projection_dim=32)  # fmt: skip
    text = CLIPTextModel(text_cfg)
    unet, vae = tiny_unet(cross_attention_dim=32), tiny_vae()
    net = tiny_controlnet(unet, 3)
    ckpt = {**unet_to_ldm(unet), **vae_to_ldm(vae), **clip_to_ldm(text)}
    base = _write_safetensors(tmp_path / "tiny-sd15.safetensors", ckpt)
    cn = _write_safetensors(tmp_path / "control_tiny_scribble.safetensors", controlnet_to_ldm(net))
    # the same layout as assets/configs, with the tiny shapes: the loader picks the folder by family
    configs = tmp_path / "configs"
    shutil.copytree(assets_dir() / "configs" / "sd15", configs / "sd15")
    unet.save_config(configs / "sd15" / "unet")
    vae.save_config(configs / "sd15" / "vae")
    text_cfg.save_pretrained(configs / "sd15" / "text_encoder")
    DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1).save_config(
        configs / "sd15" / "scheduler"
    )
    (configs / "controlnet-sd15").mkdir()
    net.save_config(configs / "controlnet-sd15")
    monkeypatch.setenv("NOISEBRUSH_SINGLE_FILE_CONFIGS", str(configs))
    return base, cn


def test_single_file_checkpoint_and_controlnet_load_offline_and_generate(tmp_path, monkeypatch, capsys):
    from helpers import circle_sketch
    from PIL import Image

    from noisebrush.engine.metadata import read_request

    base, cn = _tiny_sd15_single_file(tmp_path, monkeypatch)
    Image.fromarray(circle_sketch()).save(tmp_path / "s.png")
    out = tmp_path / "o.png"
    code = main(["generate", "--prompt", "a red circle", "--model", str(base), "--steps", "2", "--width", "64", "--height", "64",
                 "--control", f"scribble={tmp_path / 's.png'}", "--controlnet", f"scribble={cn}", "--previews",
                 str(tmp_path / "p"), "--out", str(out)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert read_request(out).controls[0].model == str(cn)
    assert len(list((tmp_path / "p").iterdir())) == 2
    entries = {e.name: e for e in scan(tmp_path)}
    assert entries[base.name].role == "base" and entries[cn.name].role == "controlnet"


def test_single_file_controlnet_of_the_wrong_role_is_refused(tmp_path, monkeypatch, capsys, tiny_model):
    base, cn = _tiny_sd15_single_file(tmp_path, monkeypatch)
    assert main(["generate", "--prompt", "x", "--model", str(cn), "--out", str(tmp_path / "o.png")]) == 2
    assert "is not a base model" in capsys.readouterr().err


def test_sdxl_folder_with_a_controlnet_generates_with_sdxl_previews(tmp_path):
    from helpers import EventLog, circle_sketch
    from tiny_model import write_sdxl_folder

    from noisebrush.engine.engine import Engine
    from noisebrush.engine.events import Cancelled, Finished, Preview
    from noisebrush.engine.previews import SDXL_LATENT_RGB
    from noisebrush.engine.request import ControlSpec, GenerationRequest

    folder = write_sdxl_folder(tmp_path / "tiny-sdxl")
    entries = {e.name: e for e in scan(tmp_path)}
    assert entries["tiny-sdxl"].family == "sdxl"
    req = GenerationRequest("a red circle", controls=(ControlSpec("scribble", circle_sketch()),), steps=3, seed=1, width=64,
                            height=64, model=str(folder))  # fmt: skip
    with Engine(preview_interval_s=0.0) as eng:
        log = EventLog()
        eng.add_listener(log)
        job = eng.submit(req)
        done = log.wait_end(job)
        assert isinstance(done, Finished), done
        assert done.image.shape == (64, 64, 3)
        assert [p.step for p in log.of(job, Preview)] == [1, 2, 3]
        plain = eng.submit(req.replace(controls=()))
        assert isinstance(log.wait_end(plain), Finished)
        # cancel works the same way on SDXL
        state = {}
        eng.add_listener(
            lambda ev: isinstance(ev, Preview) and ev.job_id == state.get("j") and ev.step == 1 and eng.cancel(ev.job_id)
        )
        state["j"] = eng.submit(req.replace(steps=20))
        end = log.wait_end(state["j"])
        assert isinstance(end, Cancelled) and end.at_step <= 2
    from noisebrush.engine.device import pick_device
    from noisebrush.engine.models import load_base

    assert load_base(str(folder), pick_device()).preview.matrix == SDXL_LATENT_RGB


def test_sd15_controlnet_on_an_sdxl_base_is_refused(tmp_path, capsys):
    from helpers import circle_sketch
    from PIL import Image
    from tiny_model import write_sdxl_folder

    folder = write_sdxl_folder(tmp_path / "xl")
    tiny_controlnet(tiny_unet(cross_attention_dim=768), 1).save_pretrained(tmp_path / "sd15-cn")
    Image.fromarray(circle_sketch()).save(tmp_path / "s.png")
    code = main(["generate", "--prompt", "x", "--model", str(folder), "--control", f"scribble={tmp_path / 's.png'}",
                 "--controlnet", f"scribble={tmp_path / 'sd15-cn'}", "--out", str(tmp_path / "o.png")])  # fmt: skip
    assert code == 2
    assert "SD1.5-family ControlNet" in capsys.readouterr().err


def test_sdxl_single_file_checkpoint_and_controlnet_load_offline_and_generate(tmp_path, monkeypatch, capsys):
    from diffusers import StableDiffusionXLPipeline
    from helpers import circle_sketch
    from ldm_export import clip_to_ldm, open_clip_to_ldm, unet_to_ldm, vae_to_ldm
    from PIL import Image
    from tiny_model import write_sdxl_folder

    from noisebrush.engine.paths import assets_dir

    folder = write_sdxl_folder(tmp_path / "xl-folder")
    pipe = StableDiffusionXLPipeline.from_pretrained(folder)
    te1 = clip_to_ldm(pipe.text_encoder, "conditioner.embedders.0.transformer.")
    ckpt = {**unet_to_ldm(pipe.unet), **vae_to_ldm(pipe.vae), **te1, **open_clip_to_ldm(pipe.text_encoder_2)}
    base = _write_safetensors(tmp_path / "tiny-xl.safetensors", ckpt)
    from diffusers import ControlNetModel

    net = ControlNetModel.from_pretrained(folder / "controlnets" / "scribble")
    cn = _write_safetensors(
        tmp_path / "controlnet-xl-scribble.safetensors", net.state_dict()
    )  # SDXL ControlNets ship in diffusers layout
    configs = tmp_path / "configs"
    shutil.copytree(assets_dir() / "configs" / "sdxl", configs / "sdxl")
    shutil.copytree(assets_dir() / "configs" / "sd15" / "tokenizer", configs / "sd15" / "tokenizer")  # SDXL's too
    for part in ("unet", "vae", "scheduler"):
        getattr(pipe, part).save_config(configs / "sdxl" / part)
    pipe.text_encoder.config.save_pretrained(configs / "sdxl" / "text_encoder")
    pipe.text_encoder_2.config.save_pretrained(configs / "sdxl" / "text_encoder_2")
    (configs / "controlnet-sdxl").mkdir()
    net.save_config(configs / "controlnet-sdxl")
    monkeypatch.setenv("NOISEBRUSH_SINGLE_FILE_CONFIGS", str(configs))
    entries = {e.name: e for e in scan(tmp_path)}
    assert (entries[base.name].family, entries[base.name].role) == ("sdxl", "base")
    assert (entries[cn.name].family, entries[cn.name].role, entries[cn.name].control_kind) == ("sdxl", "controlnet", "scribble")
    Image.fromarray(circle_sketch()).save(tmp_path / "s.png")
    out = tmp_path / "o.png"
    code = main(["generate", "--prompt", "a red circle", "--model", str(base), "--steps", "2", "--width", "64", "--height", "64",
                 "--control", f"scribble={tmp_path / 's.png'}", "--controlnet", f"scribble={cn}", "--out", str(out)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert Image.open(out).size == (64, 64)


def test_one_bad_file_in_the_models_folder_never_stops_a_scan(tmp_path, tiny_model):
    import os
    import shutil
    import struct

    from noisebrush.engine.catalog import scan

    shutil.copytree(tiny_model, tmp_path / "good")
    header = json.dumps([1, 2, 3]).encode()
    (tmp_path / "wrong-shape.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    (tmp_path / "list-config").mkdir()
    (tmp_path / "list-config" / "config.json").write_text("[1, 2]")
    os.mkfifo(tmp_path / "pipe.safetensors")
    entries = {e.name: e for e in scan(tmp_path)}
    assert entries["good"].usable
    assert not entries["wrong-shape.safetensors"].usable and "not a valid .safetensors" in entries["wrong-shape.safetensors"].note
    assert "pipe.safetensors" not in entries and "list-config" not in entries


@pytest.mark.parametrize("broken", ["model_index.json", "controlnets/scribble/config.json"])
def test_a_broken_config_is_a_clear_error_not_an_unexpected_one(tmp_path, tiny_model, broken):
    import shutil

    from helpers import circle_sketch, logged_engine

    from noisebrush.engine.events import Failed
    from noisebrush.engine.request import ControlSpec, GenerationRequest

    model = tmp_path / "m"
    shutil.copytree(tiny_model, model)
    (model / broken).write_text('["not", "an", "object"]')
    scribble = (ControlSpec("scribble", circle_sketch()),)
    req = GenerationRequest("x", controls=scribble, steps=1, width=64, height=64, model=str(model))
    with logged_engine() as eng:
        end = eng.log.wait_end(eng.submit(req))
    assert isinstance(end, Failed) and "not a JSON object" in end.message and "unexpected" not in end.message


def test_the_x0_estimate_matches_the_formula_for_any_timestep_form():
    from diffusers import DPMSolverMultistepScheduler

    from noisebrush.engine.previews import X0Tap

    sched = DPMSolverMultistepScheduler()
    tap = X0Tap(sched)
    torch.manual_seed(0)
    sample, eps = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    for t in (999, torch.tensor(500), torch.tensor([10]), 0):
        a = sched.alphas_cumprod[int(torch.as_tensor(t).reshape(-1)[0])]
        want = (sample - (1 - a).sqrt() * eps) / a.sqrt()
        got = tap._estimate(eps, t, sample)
        assert torch.allclose(got, want, atol=1e-5), t
