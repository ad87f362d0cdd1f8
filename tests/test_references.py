"""Reference pictures (issue 27): IP-Adapter as data in the request, run locally by our own attention processors."""

import threading
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file, save_file
from tiny_ip_adapter import write_ip_adapter

from noisebrush.engine.composition import MAX_REFERENCES, Reference, Region
from noisebrush.engine.errors import UserError
from noisebrush.engine.events import Finished
from noisebrush.engine.request import GenerationRequest


def flat(rgb: tuple[int, int, int], size: int = 64) -> np.ndarray:
    return np.broadcast_to(np.array(rgb, np.uint8), (size, size, 3)).copy()


RED, BLUE = flat((230, 30, 20)), flat((20, 40, 230))


@pytest.fixture(scope="module")
def adapters(tiny_model, tmp_path_factory) -> dict[str, Path]:
    """A models folder holding h94's layout for the tiny SD1.5 model and the tiny SDXL one."""
    from tiny_model import write_sdxl_folder

    root = tmp_path_factory.mktemp("ip")
    sdxl = write_sdxl_folder(root / "tiny-sdxl", with_controlnet=False)
    return {"root": root, "sd15": write_ip_adapter(root / "IP-Adapter", tiny_model),
            "sdxl": write_ip_adapter(root / "IP-Adapter", sdxl, sdxl=True), "sdxl_model": sdxl}  # fmt: skip


@pytest.fixture
def models_env(adapters, monkeypatch):
    monkeypatch.setenv("NOISEBRUSH_MODELS", str(adapters["root"]))
    return adapters


@pytest.fixture(scope="module")
def runner():
    from noisebrush.engine.device import LoadOptions, choose
    from noisebrush.engine.models import ModelManager
    from noisebrush.engine.runner import Runner

    options = LoadOptions()
    return Runner(ModelManager(choose(options), options), preview_interval_s=0.0, previews=False)


def run(runner, req: GenerationRequest) -> np.ndarray:
    events: list = []
    runner.run(1, req, events.append, threading.Event())
    return next(e for e in events if isinstance(e, Finished)).image


def diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(float) - b).mean())


# --- the request: bad input is one sentence ------------------------------------------------------------------
@pytest.mark.parametrize("make, match", [
    (lambda: Reference("not a picture"), "must be a picture"),
    (lambda: Reference(np.zeros((1, 1, 3), np.uint8)), "1×1 px cannot be used.*enlarge"),
    (lambda: Reference(np.zeros((1000, 20_000, 3), np.uint8)), "20000×1000 px cannot be used.*scale it down"),
    (lambda: Reference(RED, weight=2.0), "weight must be from 0 to 1.5"),
    (lambda: Reference(RED, weight=float("nan")), "finite"),
    (lambda: Reference(RED, mode="vibes"), "one of style, composition, both"),
    (lambda: Reference(RED, start=0.8, end=0.2), "start/end"),
    (lambda: GenerationRequest("p", width=64, height=64, references=(Reference(RED, mask=np.zeros((32, 32), np.uint8)),)),
     "mask of reference 1 is 32×32"),
    (lambda: GenerationRequest("p", width=64, height=64, references=(Reference(RED),) * (MAX_REFERENCES + 1)),
     f"at most {MAX_REFERENCES} reference"),
])  # fmt: skip
def test_bad_references_are_one_sentence(make, match):
    with pytest.raises(UserError, match=match) as caught:
        make().validate()
    assert "\n" not in str(caught.value)


def test_a_reference_is_frozen_and_compares_by_content():
    pic = RED.copy()
    ref = Reference(pic, 0.5, "style")
    pic[:] = 0  # painting on the source afterwards does not reach the request
    assert ref.image.max() == 230 and not ref.image.flags.writeable
    assert ref == Reference(RED, 0.5, "style") and ref != Reference(BLUE, 0.5, "style")
    assert not Reference(RED, 0.0).active and Reference(RED, 0.1).active


# --- the local backend -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_a_reference_changes_the_picture_and_weight_0_is_the_plain_picture_bit_for_bit(runner, tiny_model, models_env, family):
    model = tiny_model if family == "sd15" else str(models_env["sdxl_model"])
    base = GenerationRequest("a cat", model=model, width=64, height=64, steps=3, seed=1)
    plain = run(runner, base)
    red = run(runner, base.replace(references=(Reference(RED, 1.0),)))
    blue = run(runner, base.replace(references=(Reference(BLUE, 1.0),)))
    assert diff(plain, red) > 3 and diff(red, blue) > 3  # the picture matters, not only that there is one
    assert np.array_equal(run(runner, base.replace(references=(Reference(RED, 0.0),))), plain)
    assert np.array_equal(run(runner, base.replace(references=(Reference(RED, 1.0),))), red)  # the seed reproduces
    unet = runner.models.get(model).components["unet"]
    assert not any("Reference" in type(p).__name__ for p in unet.attn_processors.values())  # put back after the job


def test_style_mode_scales_only_the_style_layers_and_composition_only_the_layout_ones(runner, tiny_model, models_env):
    from noisebrush.engine.reference_attention import ReferenceJob, cross_attention_names

    unet = runner.models.get(tiny_model).components["unet"]
    names = cross_attention_names(unet)
    adapter = runner.models.get(tiny_model)
    seen: list[ReferenceJob] = []
    original = ReferenceJob.__init__

    def spy(self, *a, **kw):
        original(self, *a, **kw)
        seen.append(self)

    ReferenceJob.__init__ = spy
    try:
        base = GenerationRequest("a cat", model=tiny_model, width=64, height=64, steps=2, seed=1)
        run(runner, base.replace(references=(Reference(RED, 0.7, "style"), Reference(BLUE, 0.9, "composition"))))
    finally:
        ReferenceJob.__init__ = original
    scales = seen[-1].scales
    # the tiny UNet is SDXL-shaped: attention in its lowest up block (2) and lowest down block (1)
    assert {n for n in names if scales[n][0] > 0} == {"up_blocks.0.attentions.1.transformer_blocks.0.attn2.processor"}
    assert {n for n in names if scales[n][1] > 0} == {"down_blocks.1.attentions.0.transformer_blocks.0.attn2.processor"}
    assert max(s[0] for s in scales.values()) == pytest.approx(0.7) and adapter.ip_adapters


def _real_names(family: str) -> list[str]:
    """The cross-attention names of a real SD1.5 / SDXL UNet, built on the meta device from the bundled configs."""
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel

    from noisebrush.engine.paths import single_file_configs_dir
    from noisebrush.engine.reference_attention import cross_attention_names

    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(single_file_configs_dir() / family / "unet"))
    return cross_attention_names(unet)


def test_mode_layers_on_real_unets_are_instantstyles_and_the_comfyui_packs():
    from noisebrush.engine.reference_attention import mode_weights

    xl = mode_weights(_real_names("sdxl"))
    assert len(xl) == 70  # h94's SDXL adapters have 70 layer pairs (ip_adapter.1 … ip_adapter.139)
    assert {n.split(".transformer")[0] for n, w in xl.items() if w["style"]} == {"up_blocks.0.attentions.1"}
    assert {n.split(".transformer")[0] for n, w in xl.items() if w["composition"]} == {"down_blocks.2.attentions.1"}
    sd = mode_weights(_real_names("sd15"))
    assert len(sd) == 16  # the pack's 16 SD1.5 blocks: input 0–5, middle 6, output 7–15
    order = list(sd)
    pack = [*order[:6], *[n for n in order if n.startswith("mid_block")], *[n for n in order if n.startswith("up_blocks")]]
    assert {i for i, n in enumerate(pack) if sd[n]["style"]} == {0, 1, 2, 3, *range(9, 16)}
    assert {i: sd[n]["composition"] for i, n in enumerate(pack) if sd[n]["composition"]} == {4: 0.25, 5: 1.0}


def test_a_mask_limits_the_reference_to_its_area(runner, tiny_model, models_env):
    base = GenerationRequest("a cat", model=tiny_model, width=128, height=128, steps=3, seed=2)
    left = np.zeros((128, 128), np.uint8)
    left[:, :64] = 255
    plain = run(runner, base)
    masked = run(runner, base.replace(references=(Reference(RED, 1.5, mask=left),)))
    inside, far_outside = diff(plain[:, :48], masked[:, :48]), diff(plain[:, 96:], masked[:, 96:])
    # self-attention carries some of it across (a tiny UNet's two levels see the whole picture): less, not nothing
    assert inside > 1.5 * far_outside, (inside, far_outside)


def test_the_adapter_loads_once_across_ten_generations(runner, tiny_model, models_env, monkeypatch):
    import noisebrush.engine.reference_attention as ra

    loads = []
    real = ra.load_adapter
    monkeypatch.setattr(ra, "load_adapter", lambda *a, **kw: loads.append(a[0]) or real(*a, **kw))
    runner.models.get(tiny_model).ip_adapters.clear()
    base = GenerationRequest("a cat", model=tiny_model, width=64, height=64, steps=1, seed=1)
    for i in range(10):
        pic = flat((25 * i, 100, 200 - 20 * i))
        run(runner, base.replace(references=(Reference(pic, 0.1 * (i + 1), ("style", "composition", "both")[i % 3]),)))
    assert len(loads) == 1


def test_start_and_end_limit_the_steps_a_reference_acts_on(runner, tiny_model, models_env):
    base = GenerationRequest("a cat", model=tiny_model, width=64, height=64, steps=4, seed=3)
    full = run(runner, base.replace(references=(Reference(RED, 1.0),)))
    late = run(runner, base.replace(references=(Reference(RED, 1.0, start=0.5),)))
    plain = run(runner, base)
    assert diff(late, full) > 1 and diff(late, plain) > 1


def test_references_and_regions_work_together(runner, tiny_model, models_env):
    left = np.zeros((64, 64), np.uint8)
    left[:, :32] = 255
    base = GenerationRequest("a cat", model=tiny_model, width=64, height=64, steps=2, seed=4,
                             regions=(Region(left, "a dog"),))  # fmt: skip
    regions_only = run(runner, base)
    both = run(runner, base.replace(references=(Reference(RED, 1.0),)))
    assert diff(regions_only, both) > 3


# --- refused before anything loads, with what to get -------------------------------------------------------------
def fresh_runner():
    from noisebrush.engine.device import LoadOptions, choose
    from noisebrush.engine.models import ModelManager
    from noisebrush.engine.runner import Runner

    options = LoadOptions()
    return Runner(ModelManager(choose(options), options), previews=False)


def test_a_model_no_adapter_fits_is_refused_before_loading_with_the_reason(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("NOISEBRUSH_MODELS", str(tmp_path))
    monkeypatch.setattr("noisebrush.engine.ip_adapters._hub_snapshot", lambda: None)
    r = fresh_runner()
    with pytest.raises(UserError, match="no IP-Adapter fits .*tiny \\(its text encoder is 384-wide.*SD1.5 or SDXL model"):
        r.run(1, GenerationRequest("x", model=tiny_model, references=(Reference(RED),)), lambda e: None, threading.Event())
    assert not r.models.is_loaded(tiny_model)


def _mean_distance(image: np.ndarray, rgb) -> float:
    return float(np.abs(image.reshape(-1, 3).astype(float).mean(0) - np.array(rgb)).sum())


@pytest.mark.parametrize("mode", ["both", "style"])
def test_the_embedded_model_has_its_own_adapter_and_follows_a_references_colour(runner, tmp_path, monkeypatch, mode):
    """No download: assets/models/default/ip-adapter/ (training/train_reference.py). A blue and a red reference each
    pull the picture's colours toward theirs; Style acts through the one layer the adapter declares."""
    monkeypatch.setenv("NOISEBRUSH_MODELS", str(tmp_path))
    base = GenerationRequest("a circle", steps=12, seed=1)
    plain = run(runner, base)
    for rgb in ((220, 35, 35), (35, 75, 215)):
        ref = flat(rgb, 128)
        ref[40:88, 40:88] = 245
        got = run(runner, base.replace(references=(Reference(ref, 1.0, mode),)))
        # a clear pull: the red one moves this seed's mean colour 40-44 closer (over R+G+B) through either decoder
        assert _mean_distance(got, rgb) < _mean_distance(plain, rgb) - 30, (rgb, got.reshape(-1, 3).mean(0))


def test_an_adapter_can_declare_its_style_layers(runner, monkeypatch, tmp_path):
    from noisebrush.engine.ip_adapters import adapter_files
    from noisebrush.engine.paths import default_model_dir
    from noisebrush.engine.reference_attention import cross_attention_names, mode_weights

    files = adapter_files(default_model_dir() / "ip-adapter" / "ip-adapter_noisebrush.safetensors")
    assert files.mode_layers == (("style", ("up_blocks.1.attentions.1",)),)
    names = cross_attention_names(runner.models.get("").components["unet"])
    weights = mode_weights(names, files.mode_layers)
    assert [n for n in names if weights[n]["style"]] == ["up_blocks.1.attentions.1.transformer_blocks.0.attn2.processor"]
    assert weights == {n: {**w, "style": weights[n]["style"]} for n, w in mode_weights(names).items()}  # the rest: the rule


def test_a_missing_adapter_names_what_to_get(tmp_path, monkeypatch):
    from noisebrush.engine.ip_adapters import find_adapter

    monkeypatch.setenv("NOISEBRUSH_MODELS", str(tmp_path))
    monkeypatch.setattr("noisebrush.engine.ip_adapters._hub_snapshot", lambda: None)
    with pytest.raises(UserError, match="no SD1.5 IP-Adapter found.*models/ip-adapter_sd15.safetensors and "
                                        "models/image_encoder/ from h94/IP-Adapter"):  # fmt: skip
        find_adapter(768, "dreamshaper")


def test_flow_models_are_refused_before_loading(tmp_path, monkeypatch):
    from tiny_flow import write_flux_folder

    flux = write_flux_folder(tmp_path / "flux", with_controlnet=False)
    r = fresh_runner()
    with pytest.raises(UserError, match="reference pictures run on SD1.5 and SDXL .*not on FLUX"):
        r.run(1, GenerationRequest("x", model=str(flux), references=(Reference(RED),)), lambda e: None, threading.Event())
    assert not r.models.is_loaded(str(flux))


def _broken(adapters, tmp_path, change) -> str:
    state = load_file(str(adapters["sd15"]))
    change(state)
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "image_encoder").symlink_to(adapters["sd15"].parent / "image_encoder")
    path = folder / "ip-adapter_sd15.safetensors"
    save_file(state, str(path))
    return str(path)


@pytest.mark.parametrize("change, match", [
    (lambda s: s.pop("ip_adapter.3.to_v_ip.weight"), "missing IP-Adapter weights \\(layer 3\\)"),
    (lambda s: [s.pop(k) for k in list(s) if k.startswith("image_proj")], "is not an IP-Adapter"),
])  # fmt: skip
def test_damaged_adapters_are_one_sentence(runner, tiny_model, adapters, tmp_path, change, match):
    path = _broken(adapters, tmp_path, change)
    with pytest.raises(UserError, match=match):
        run(runner, GenerationRequest("x", model=tiny_model, width=64, height=64, steps=1,
                                      references=(Reference(RED, adapter=path),)))  # fmt: skip


def test_an_adapter_of_another_family_or_a_pickle_is_refused(runner, tiny_model, adapters, tmp_path):
    req = GenerationRequest("x", model=tiny_model, width=64, height=64, steps=1)
    with pytest.raises(UserError, match="made for 80-wide models .* choose one made for it"):
        run(runner, req.replace(references=(Reference(RED, adapter=str(adapters["sdxl"])),)))
    pickle = tmp_path / "ip-adapter_sd15.bin"
    pickle.write_bytes(b"\x80\x04not really")
    with pytest.raises(UserError, match="pickle checkpoint"):
        run(runner, req.replace(references=(Reference(RED, adapter=str(pickle)),)))


# --- the command line ------------------------------------------------------------------------------------------
def _cli(tiny_model, out: Path, *extra: str) -> int:
    from noisebrush.cli import main

    return main(["generate", "--prompt", "a cat", "--model", tiny_model, "--steps", "2", "--seed", "3", "--width", "64",
                 "--height", "64", "--out", str(out), *extra])  # fmt: skip


def test_cli_reference_writes_a_png_that_reruns_with_the_picture_inside(tiny_model, models_env, tmp_path):
    from PIL import Image

    from noisebrush.cli import main
    from noisebrush.engine.metadata import read_request

    big = np.zeros((1500, 3000, 3), np.uint8)
    big[..., 0] = 220
    Image.fromarray(big).save(tmp_path / "ref.png")
    out, plain = tmp_path / "out.png", tmp_path / "plain.png"
    assert _cli(tiny_model, out, "--reference", f"{tmp_path / 'ref.png'}@0.6", "--reference-mode", "style") == 0
    assert _cli(tiny_model, plain) == 0
    saved = read_request(out)
    (ref,) = saved.references
    assert (ref.weight, ref.mode, ref.image.shape) == (0.6, "style", (512, 1024, 3))  # kept at 1024 px on its long side
    (tmp_path / "ref.png").unlink()  # the file may vanish: the PNG holds the picture
    again = tmp_path / "again.png"
    assert main(["generate", "--from", str(out), "--out", str(again)]) == 0
    assert np.array_equal(np.asarray(Image.open(again)), np.asarray(Image.open(out)))
    assert not np.array_equal(np.asarray(Image.open(plain)), np.asarray(Image.open(out)))


def _bomb(folder: Path) -> Path:
    from PIL import Image

    Image.new("1", (12_000, 12_000)).save(folder / "bomb.png")  # 144 MP of nothing, a few kB on disk
    return folder / "bomb.png"


@pytest.mark.parametrize("make, says", [
    (lambda d: d / "missing.png", "no such file"),
    (lambda d: (d / "notes.png").write_text("hello") and d / "notes.png", "not an image"),
    (_bomb, "too large"),
    (lambda d: __import__("PIL.Image").Image.new("RGB", (1, 1)).save(d / "dot.png") or d / "dot.png", "1×1 px cannot be used"),
    (lambda d: __import__("PIL.Image").Image.new("RGB", (20_000, 64)).save(d / "strip.png") or d / "strip.png",
     "20000×64 px cannot be used"),
])  # fmt: skip
def test_cli_bad_reference_pictures_exit_2_with_one_line(tiny_model, tmp_path, capsys, make, says):
    out = tmp_path / "out.png"
    assert _cli(tiny_model, out, "--reference", str(make(tmp_path))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert says in err[-1] and "Traceback" not in "\n".join(err)
    assert not out.exists()


def test_cli_on_a_model_that_cannot_take_a_reference_exits_2_with_the_reason(tiny_model, tmp_path, capsys, monkeypatch):
    from PIL import Image

    monkeypatch.setenv("NOISEBRUSH_MODELS", str(tmp_path))
    monkeypatch.setattr("noisebrush.engine.ip_adapters._hub_snapshot", lambda: None)
    Image.new("RGB", (64, 64), (200, 10, 10)).save(tmp_path / "ref.png")
    assert _cli(tiny_model, tmp_path / "out.png", "--reference", str(tmp_path / "ref.png")) == 2
    assert "no IP-Adapter fits" in capsys.readouterr().err and not (tmp_path / "out.png").exists()


def test_cli_reference_on_the_embedded_model_works_out_of_the_box(tmp_path, monkeypatch):
    from PIL import Image

    from noisebrush.cli import main
    from noisebrush.engine.metadata import read_request

    monkeypatch.setenv("NOISEBRUSH_MODELS", str(tmp_path))
    Image.new("RGB", (96, 96), (35, 75, 215)).save(tmp_path / "ref.png")
    out = tmp_path / "out.png"
    assert main(["generate", "--prompt", "a circle", "--steps", "4", "--seed", "1", "--reference",
                 f"{tmp_path / 'ref.png'}@1.0", "--reference-mode", "style", "--out", str(out)]) == 0  # fmt: skip
    assert read_request(out).references[0].mode == "style"


# --- where the files come from ----------------------------------------------------------------------------------
def _sd15_shaped_adapter(root: Path) -> Path:
    """An adapter whose header says SD1.5 (768-wide), tiny otherwise: what the models list should call SD1.5."""
    import torch
    from tiny_ip_adapter import write_encoder

    write_encoder(root / "models" / "image_encoder")
    state = {"image_proj.proj.weight": torch.zeros(4 * 768, 16), "image_proj.proj.bias": torch.zeros(4 * 768),
             "image_proj.norm.weight": torch.ones(768), "image_proj.norm.bias": torch.zeros(768)}  # fmt: skip
    for i in range(16):
        for part in "kv":
            state[f"ip_adapter.{2 * i + 1}.to_{part}_ip.weight"] = torch.zeros(8, 768)
    path = root / "models" / "ip-adapter_sd15.safetensors"
    save_file(state, str(path))
    return path


def test_the_models_list_shows_adapters_by_family_and_finds_the_one_for_a_model(tmp_path, monkeypatch):
    from noisebrush.engine.catalog import scan
    from noisebrush.engine.ip_adapters import find_adapter

    path = _sd15_shaped_adapter(tmp_path / "IP-Adapter")
    (tmp_path / "ip-adapter_broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")  # not one
    monkeypatch.setattr("noisebrush.engine.ip_adapters._hub_snapshot", lambda: None)
    (entry,) = [e for e in scan(tmp_path, depth=4) if e.role == "ip-adapter"]
    assert (entry.path, entry.family, entry.usable) == (path, "sd15", True)
    files = find_adapter(768, "dreamshaper", models_root=tmp_path)  # the broken file does not block the good one
    assert files.path == path and files.encoder == path.parent / "image_encoder" and files.kind == "plain"


def test_the_download_takes_just_the_adapter_and_its_encoder():
    from noisebrush.engine.ip_adapters import adapter_plan, missing_family

    sizes = {
        "models/ip-adapter_sd15.safetensors": 44_000_000,
        "models/ip-adapter_sd15.bin": 44_000_000,
        "models/image_encoder/config.json": 600,
        "models/image_encoder/model.safetensors": 2_500_000_000,
        "models/image_encoder/pytorch_model.bin": 2_500_000_000,
        "sdxl_models/ip-adapter_sdxl.safetensors": 700_000_000,
    }
    plan = adapter_plan(sizes, "sd15")
    assert set(plan.files) == {"models/ip-adapter_sd15.safetensors", "models/image_encoder/config.json",
                               "models/image_encoder/model.safetensors"}  # no pickles, no other variants  # fmt: skip
    assert plan.total_bytes == 2_544_000_600
    with pytest.raises(UserError, match="no longer has sdxl_models/ip-adapter_sdxl_vit-h.safetensors"):
        adapter_plan(sizes, "sdxl")
    with pytest.raises(UserError) as caught:
        from noisebrush.engine.ip_adapters import find_adapter

        find_adapter(2048, "juggernaut", models_root=Path("/nonexistent"))
    assert missing_family(str(caught.value)) == "sdxl" and missing_family("something else") is None
