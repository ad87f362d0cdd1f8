"""Flow-matching families (SD3, Flux) on tiny random models built here: detection, generation with previews and
ControlNets, cancel, seeds, x0 previews that look like the result, and ControlNets of other families refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import circle_sketch, logged_engine
from PIL import Image
from tiny_flow import fit_preview, mean_colour_distance, set_defaults, write_flux_folder, write_sd3_folder

from noisebrush.cli import main
from noisebrush.engine.catalog import scan
from noisebrush.engine.events import Cancelled, Failed, Finished, Preview
from noisebrush.engine.request import ControlSpec, GenerationRequest

FAMILIES = ("sd3", "flux")


@pytest.fixture(scope="module")
def flow_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("flow")
    models = {"sd3": write_sd3_folder(root / "tiny-sd3"), "flux": write_flux_folder(root / "tiny-flux")}
    for folder in models.values():
        fit_preview(folder)
        set_defaults(folder)
    return models


def _request(folder: Path, **kw) -> GenerationRequest:
    kw = {"controls": (ControlSpec("scribble", circle_sketch()),), "steps": 3, "seed": 1, "guidance": 4.0, **kw}
    return GenerationRequest("a red circle", width=64, height=64, model=str(folder), **kw)


def test_families_are_told_from_the_files(flow_models, tmp_path):
    from noisebrush.engine.models import model_defaults

    for family, folder in flow_models.items():
        shutil.copytree(folder, tmp_path / folder.name)
        shutil.copytree(folder / "controlnets" / "scribble", tmp_path / "controlnets" / f"{family}-scribble")
    entries = {e.name: e for e in scan(tmp_path)}
    assert (entries["tiny-sd3"].family, entries["tiny-sd3"].role, entries["tiny-sd3"].usable) == ("sd3", "base", True)
    assert (entries["tiny-flux"].family, entries["tiny-flux"].role) == ("flux", "base")
    e = entries["sd3-scribble"]
    assert (e.family, e.role, e.control_kind) == ("sd3", "controlnet", "scribble")
    assert (entries["flux-scribble"].family, entries["flux-scribble"].role) == ("flux", "controlnet")
    # the kind of guidance follows the model: CFG for SD3, distilled for Flux dev, none for Flux schnell
    assert model_defaults(str(flow_models["sd3"])).guidance_kind == "cfg"
    flux = tmp_path / "tiny-flux"
    (flux / "noisebrush.json").unlink()
    d = model_defaults(str(flux))
    assert (d.width, d.steps, d.guidance, d.guidance_kind, d.scheduler) == (1024, 28, 3.5, "distilled", "Euler")
    cfg = json.loads((flux / "transformer" / "config.json").read_text())
    (flux / "transformer" / "config.json").write_text(json.dumps({**cfg, "guidance_embeds": False}))
    assert (model_defaults(str(flux)).guidance_kind, model_defaults(str(flux)).steps) == ("none", 4)


@pytest.mark.parametrize("family", FAMILIES)
def test_generates_with_a_preview_each_step_a_seed_and_a_control(flow_models, family):
    with logged_engine() as eng:
        req = _request(flow_models[family])
        ends = []
        for r in (req, req, req.replace(controls=())):
            job = eng.submit(r)
            end = eng.log.wait_end(job)
            assert isinstance(end, Finished), end
            ends.append(end)
            assert [p.step for p in eng.log.of(job, Preview)] == [1, 2, 3]
        first, again, plain = ends
        assert first.image.shape == (64, 64, 3) and first.params.scheduler == "Euler"
        assert np.array_equal(first.image, again.image)  # the same seed gives the same picture
        assert np.abs(first.image.astype(int) - plain.image).mean() > 1  # the control map changes it
        other = eng.submit(req.replace(seed=2))
        assert not np.array_equal(eng.log.wait_end(other).image, first.image)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_last_x0_preview_has_the_colours_of_the_result(flow_models, family):
    with logged_engine() as eng:
        for seed in (1, 5):
            job = eng.submit(_request(flow_models[family], seed=seed, steps=4))
            end = eng.log.wait_end(job)
            previews = eng.log.of(job, Preview)
            assert previews[-1].image.shape == (8, 8, 3)  # Flux's packed tokens unpacked to the latent grid
            close = mean_colour_distance(previews[-1].image, end.image)
            grey = mean_colour_distance(np.full_like(end.image, 128), end.image)
            assert close < 40 and close < 0.75 * grey, (close, grey)  # measured: 16-20 against 34-36


@pytest.mark.parametrize("family", FAMILIES)
def test_cancel_stops_within_a_step(flow_models, family):
    with logged_engine() as eng:
        state: dict = {}
        eng.add_listener(lambda ev: isinstance(ev, Preview) and ev.job_id == state.get("j") and ev.step == 1
                         and eng.cancel(ev.job_id))  # fmt: skip
        state["j"] = eng.submit(_request(flow_models[family], steps=20))
        end = eng.log.wait_end(state["j"])
        assert isinstance(end, Cancelled) and end.at_step <= 2


def test_the_cli_writes_a_preview_per_step_and_the_result(flow_models, tmp_path, capsys):
    Image.fromarray(circle_sketch()).save(tmp_path / "s.png")
    for family, folder in flow_models.items():
        out, previews = tmp_path / f"{family}.png", tmp_path / f"p-{family}"
        code = main(["generate", "--prompt", "a red circle", "--model", str(folder), "--control",
                     f"scribble={tmp_path / 's.png'}", "--previews", str(previews), "--out", str(out)])  # fmt: skip
        assert code == 0, capsys.readouterr().err
        assert Image.open(out).size == (64, 64) and len(list(previews.iterdir())) == 3


@pytest.mark.parametrize("family", FAMILIES)
def test_two_controlnets_at_once(flow_models, family, tmp_path):
    from tiny_flow import flux_controlnet, sd3_controlnet

    second = tmp_path / "second"
    (sd3_controlnet if family == "sd3" else flux_controlnet)(seed=20).save_pretrained(second)
    sketch = circle_sketch()
    two = (ControlSpec("scribble", sketch), ControlSpec("depth", 255 - sketch, weight=0.5, model=str(second)))
    with logged_engine() as eng:
        end = eng.log.wait_end(eng.submit(_request(flow_models[family], controls=two)))
        one = eng.log.wait_end(eng.submit(_request(flow_models[family])))
    assert isinstance(end, Finished), end
    assert not np.array_equal(end.image, one.image)


def test_refine_and_inpaint_where_diffusers_has_the_pipeline(flow_models):
    init = np.full((64, 64, 3), 200, np.uint8)
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 16:48] = 255
    with logged_engine() as eng:
        for family, folder in flow_models.items():
            for kw in (dict(init_image=init, strength=0.6), dict(init_image=init, mask=mask, strength=0.9)):
                plain = eng.log.wait_end(eng.submit(_request(folder, controls=(), **kw)))
                assert isinstance(plain, Finished) and plain.image.shape == (64, 64, 3), (family, plain)
                controlled = eng.log.wait_end(eng.submit(_request(folder, **kw)))
                if family == "flux":
                    assert isinstance(controlled, Finished), controlled
                    if "mask" in kw:  # outside the mask the picture is kept exactly
                        assert (controlled.image[mask == 0] == 200).all()
                else:  # diffusers has no SD3 ControlNet pipeline for these: a clear refusal
                    assert isinstance(controlled, Failed) and "switch the control layers off" in controlled.message


def test_controlnets_of_another_family_are_refused_before_loading(flow_models, tmp_path, capsys):
    from tiny_model import tiny_controlnet, tiny_unet

    tiny_controlnet(tiny_unet(cross_attention_dim=768), 1).save_pretrained(tmp_path / "sd15-cn")
    Image.fromarray(circle_sketch()).save(tmp_path / "s.png")

    def run(model: Path, net: Path) -> str:
        code = main(["generate", "--prompt", "x", "--model", str(model), "--control", f"scribble={tmp_path / 's.png'}",
                     "--controlnet", f"scribble={net}", "--out", str(tmp_path / "o.png")])  # fmt: skip
        assert code == 2
        return capsys.readouterr().err

    assert "SD1.5-family ControlNet, but tiny-sd3 is an SD3 model" in run(flow_models["sd3"], tmp_path / "sd15-cn")
    flux_net = flow_models["flux"] / "controlnets" / "scribble"
    assert "is a Flux ControlNet, but tiny-sd3 is an SD3 model" in run(flow_models["sd3"], flux_net)
    assert "is an SD3 ControlNet, but tiny-flux is a Flux model" in run(
        flow_models["flux"], flow_models["sd3"] / "controlnets" / "scribble"
    )


def test_the_flow_x0_estimate_is_x_t_minus_sigma_v():
    from diffusers import FlowMatchEulerDiscreteScheduler

    from noisebrush.engine.flow import flux_unpacker
    from noisebrush.engine.previews import X0Tap

    sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    sched.set_timesteps(4)
    tap = X0Tap(sched)
    torch.manual_seed(0)
    x0, noise = torch.randn(1, 16, 8, 8), torch.randn(1, 16, 8, 8)
    v = noise - x0  # the exact velocity: every step's estimate must give x0 back
    x = sched.sigmas[0] * noise + (1 - sched.sigmas[0]) * x0
    for t in sched.timesteps:
        x = sched.step(v, t, x).prev_sample
        assert torch.allclose(tap.x0, x0, atol=1e-5)
    assert torch.allclose(x, x0, atol=1e-5)  # and the sampler lands on it
    # Flux: (1, tokens, 64) packed 2×2 patches unpack to (1, 16, H/8, W/8), the patch order as diffusers packs it
    from diffusers import FluxPipeline

    packed = FluxPipeline._pack_latents(x0, 1, 16, 8, 8)
    assert torch.equal(flux_unpacker(64, 64, 8)(packed), x0)


def test_memory_and_speed_options_run_on_flow_models(flow_models, tmp_path):
    from noisebrush.engine.device import LoadOptions

    for family, folder in flow_models.items():
        flags = ["--attention-slicing", "--vae-tiling", "--cpu-offload"]  # offload is skipped without CUDA
        assert main(["generate", "--prompt", "x", "--model", str(folder), *flags, "--out", str(tmp_path / "o.png")]) == 0
        with logged_engine(options=LoadOptions(channels_last=True, fuse_qkv=True)) as eng:
            assert isinstance(eng.log.wait_end(eng.submit(_request(folder))), Finished), family


def test_the_gui_names_the_guidance_the_model_has(fake_window, flow_models):
    panel = fake_window.panel
    title = lambda: panel._form.labelForField(panel.guidance_row).text()  # noqa: E731
    fake_window.state.update(model=str(flow_models["flux"]))
    assert title() == "Guidance (distilled)"
    fake_window.state.update(model=str(flow_models["sd3"]))
    assert title() == "CFG"


def test_single_flow_files_are_named_and_refused_with_the_way_out(lonely_folder, capsys):
    from safetensors.torch import save_file

    tmp_path = lonely_folder

    files = {
        "sd3_medium.safetensors": "model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight",
        "flux1-dev.safetensors": "double_blocks.0.img_attn.qkv.weight",
        "flux-union.safetensors": "controlnet_x_embedder.weight",
        "sd3-canny.safetensors": "pos_embed_input.proj.weight",
    }
    for name, key in files.items():
        save_file({key: torch.zeros(2, 2)}, str(tmp_path / name))
    entries = {e.name: e for e in scan(tmp_path)}
    got = {n: (e.family, e.role, e.usable) for n, e in entries.items()}
    assert got == {"sd3_medium.safetensors": ("sd3", "base", False), "flux1-dev.safetensors": ("flux", "base", False),
                   "flux-union.safetensors": ("flux", "controlnet", False),
                   "sd3-canny.safetensors": ("sd3", "controlnet", False)}  # fmt: skip
    flux = str(tmp_path / "flux1-dev.safetensors")
    code = main(["generate", "--prompt", "x", "--model", flux, "--out", str(tmp_path / "o.png")])
    assert code == 2 and "Flux transformer only, without its VAE and text encoders" in capsys.readouterr().err


def test_offload_options_pick_accelerates_hooks_on_cuda_only():
    from noisebrush.cli import _parser
    from noisebrush.engine.device import LoadOptions
    from noisebrush.engine.models import offload

    class Pipe:
        def __init__(self) -> None:
            self.calls: list[str] = []

        def enable_sequential_cpu_offload(self) -> None:
            self.calls.append("sequential")

        def enable_model_cpu_offload(self) -> None:
            self.calls.append("model")

    for options, device, want in ((LoadOptions(sequential_offload=True, cpu_offload=True), "cuda", ["sequential"]),
                                  (LoadOptions(cpu_offload=True), "cuda", ["model"]),
                                  (LoadOptions(sequential_offload=True), "cpu", [])):  # fmt: skip
        pipe = Pipe()
        offload(pipe, options, device)
        assert pipe.calls == want
    args = _parser().parse_args(["generate", "--prompt", "x", "--sequential-offload", "--out", "o.png"])
    assert args.sequential_offload
