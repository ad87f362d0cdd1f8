"""Regions (issue 26): a prompt per painted area, as data in the request; masked cross-attention locally."""

import contextlib
import threading

import numpy as np
import pytest

from noisebrush.engine.composition import MAX_REGIONS, Region, prepare_regions
from noisebrush.engine.errors import UserError
from noisebrush.engine.events import Finished
from noisebrush.engine.request import GenerationRequest


def halves(size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    left = np.zeros((size, size), np.uint8)
    left[:, : size // 2] = 255
    return left, 255 - left


# --- preparing regions: the documented rules ----------------------------------------------------------------
def test_an_upper_region_cuts_the_lower_one_and_the_rest_is_the_background():
    low = np.zeros((64, 64), np.uint8)
    low[:, :40] = 255
    high = np.zeros((64, 64), np.uint8)
    high[:, 30:50] = 255
    kept, background, notes = prepare_regions((Region(low, "a fox"), Region(high, "a pine")), "oil painting")
    assert [r.prompt for r in kept] == ["a fox, oil painting", "a pine, oil painting"]
    assert kept[0].weight[:, 30:40].max() == 0 and kept[0].weight[:, :30].min() == 1  # the upper one wins
    assert kept[1].weight[:, 30:50].min() == 1
    assert background.prompt == "oil painting" and background.weight[:, 50:].min() == 1
    assert background.weight[:, :50].max() == 0 and notes == []


def test_a_tiny_region_is_left_out_with_a_note_and_no_regions_means_the_plain_prompt():
    dot = np.zeros((64, 64), np.uint8)
    dot[:4, :4] = 255
    kept, background, notes = prepare_regions((Region(dot, "a bird"),), "sky")
    assert kept == [] and background is None and "'a bird'" in notes[0]
    assert prepare_regions((), "sky") == ([], None, [])


@pytest.mark.parametrize("make, match", [
    (lambda: Region("not a picture", "x"), "not a picture"),
    (lambda: GenerationRequest("p", width=64, height=64, regions=(Region(np.zeros((32, 32), np.uint8), "x"),)), "32×32"),
    (lambda: GenerationRequest("p", width=64, height=64,
                               regions=(Region(np.full((64, 64), 255, np.uint8), "word " * 10_000),)), "10000 words"),
    (lambda: GenerationRequest("p", width=64, height=64,
                               regions=tuple(Region(np.full((64, 64), 255, np.uint8), f"r{i}") for i in range(MAX_REGIONS + 1))),
     f"at most {MAX_REGIONS} regions"),
])  # fmt: skip
def test_bad_regions_are_one_sentence(make, match):
    with pytest.raises(UserError, match=match) as caught:
        make().validate()
    assert "\n" not in str(caught.value)


# --- the local backend -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runner():
    from noisebrush.engine.device import LoadOptions, choose
    from noisebrush.engine.models import ModelManager
    from noisebrush.engine.runner import Runner

    options = LoadOptions()
    return Runner(ModelManager(choose(options), options), preview_interval_s=0.0, previews=False)


@contextlib.contextmanager
def region_masks(**attributes):
    """Every RegionMasks the engine makes in the block gets these attributes (record: a list; exact: True)."""
    from noisebrush.engine.region_attention import RegionMasks

    original_init = RegionMasks.__init__

    def init(self, *a, **kw):
        original_init(self, *a, **kw)
        for name, value in attributes.items():
            setattr(self, name, value)

    RegionMasks.__init__ = init
    try:
        yield
    finally:
        RegionMasks.__init__ = original_init


def run(runner, req: GenerationRequest) -> np.ndarray:
    events: list = []
    runner.run(1, req, events.append, threading.Event())
    return next(e for e in events if isinstance(e, Finished)).image


@pytest.mark.parametrize("model", ["embedded", "tiny"])
def test_a_regions_words_get_no_attention_outside_it_and_some_inside_at_every_level(runner, tiny_model, model):
    """The embedded model has cross-attention at several UNet levels and in its ControlNets; the tiny one at one."""

    left, right = halves(128)
    blob = np.zeros((128, 128), np.uint8)
    blob[16:40, 80:112] = 255  # a small region, so the max-pooling at the coarse levels matters
    req = GenerationRequest("a scene", model="" if model == "embedded" else tiny_model, width=128, height=128, steps=2,
                            seed=3, guidance=5.0, regions=(Region(left, "a red fox"), Region(blob, "a bird")))  # fmt: skip
    recorded: list = []
    with region_masks(record=recorded):
        unet = runner.models.get(req.model).components["unet"]
        before = {k: type(v) for k, v in unet.attn_processors.items()}
        run(runner, req)
    assert {k: type(v) for k, v in unet.attn_processors.items()} == before  # put back after the job
    masks = runner.region_masks
    levels = sorted({n for n, _ in recorded})
    assert len(levels) >= (2 if model == "embedded" else 1)  # every resolution with cross-attention was masked
    tokens = [block for block, _ in masks._blocks]
    starts = np.cumsum([0, *tokens])
    for n, probs in recorded:
        bias = masks.bias(n, probs.dtype, "cpu")
        for b, (start, stop) in enumerate(zip(starts[:-1], starts[1:])):
            mass = probs[..., start:stop].sum(-1).numpy()  # (batch, heads, n): the block's share at each position
            outside = (bias[:, start] < 0).numpy()
            assert float(mass[..., outside].max(initial=0)) == 0.0, (n, b)
            assert bool((mass[..., ~outside] > 0).all()), (n, b)
        assert bool((bias[:, starts[1]] == 0).sum() < n)  # the left half's words are barred somewhere at every level


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_two_regions_on_the_embedded_model_paint_their_own_colours_and_swap(runner, seed):
    left, right = halves()

    def sides(lp: str, rp: str) -> tuple[np.ndarray, np.ndarray]:
        req = GenerationRequest("", width=128, height=128, steps=20, seed=seed,
                                regions=(Region(left, lp), Region(right, rp)))  # fmt: skip
        img = run(runner, req).astype(float)
        return img[:, :64].mean((0, 1)), img[:, 64:].mean((0, 1))

    red, blue = "a red circle on a red background", "a blue circle on a blue background"
    l, r = sides(red, blue)
    assert l[0] > l[2] + 60 and r[2] > r[0] + 60, (l, r)
    l2, r2 = sides(blue, red)
    assert l2[2] > l2[0] + 60 and r2[0] > r2[2] + 60, (l2, r2)


def test_regions_with_a_sketch_follow_both(runner):
    from helpers import circle_sketch

    from noisebrush.engine.request import ControlSpec

    left, right = halves()
    sketch = circle_sketch(128)
    req = GenerationRequest("", width=128, height=128, steps=20, seed=4, controls=(ControlSpec("scribble", sketch),),
                            regions=(Region(left, "a red circle on a red background"),
                                     Region(right, "a blue circle on a blue background")))  # fmt: skip
    img = run(runner, req).astype(float)
    assert img[:, :64, 0].mean() > img[:, :64, 2].mean() and img[:, 64:, 2].mean() > img[:, 64:, 0].mean()
    assert np.array_equal(run(runner, req).astype(float), img)  # the same seed reproduces with regions too


# --- the command line and the saved PNG -----------------------------------------------------------------
def test_cli_regions_paint_their_halves_and_the_png_reruns_them_with_from(tmp_path, capsys):
    from PIL import Image

    from noisebrush.cli import main
    from noisebrush.engine.metadata import read_request

    left, right = halves()
    Image.fromarray(left).save(tmp_path / "left.png")
    Image.fromarray(right).save(tmp_path / "right.png")
    out, again = tmp_path / "out.png", tmp_path / "again.png"
    assert main(["generate", "--prompt", " ", "--steps", "20", "--seed", "5", "--out", str(out),
                 "--region", f"{tmp_path / 'left.png'}=a red circle on a red background",
                 "--region", f"{tmp_path / 'right.png'}=a blue circle on a blue background"]) == 0  # fmt: skip
    img = np.asarray(Image.open(out).convert("RGB")).astype(float)
    assert img[:, :64, 0].mean() > img[:, :64, 2].mean() + 60 and img[:, 64:, 2].mean() > img[:, 64:, 0].mean() + 60
    saved = read_request(out)
    assert [r.prompt for r in saved.regions] == ["a red circle on a red background", "a blue circle on a blue background"]
    assert np.array_equal(saved.regions[0].mask, left)  # restored exactly
    assert main(["generate", "--from", str(out), "--out", str(again)]) == 0
    assert np.array_equal(np.asarray(Image.open(again)), np.asarray(Image.open(out)))  # the same picture again


@pytest.mark.parametrize("case, expect", [
    ("notes.txt=a fox", "notes.txt"),  # not an image
    ("left.png", "MASK.png=PROMPT"),  # no prompt
])  # fmt: skip
def test_cli_bad_regions_exit_2_with_one_line(tmp_path, capsys, case, expect):
    from PIL import Image

    from noisebrush.cli import main

    (tmp_path / "notes.txt").write_text("not a picture")
    Image.fromarray(halves()[0]).save(tmp_path / "left.png")
    path, sep, prompt = case.partition("=")
    spec = f"{tmp_path / path}{sep}{prompt}"
    assert main(["generate", "--prompt", "x", "--steps", "1", "--region", spec, "--out", str(tmp_path / "o.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and expect in err[-1] and not (tmp_path / "o.png").exists()


def test_cli_an_all_black_region_is_said_and_left_out(tmp_path, capsys):
    from PIL import Image

    from noisebrush.cli import main

    Image.fromarray(np.zeros((128, 128), np.uint8)).save(tmp_path / "black.png")
    assert main(["generate", "--prompt", "a red circle on a blue background", "--steps", "2", "--seed", "1",
                 "--region", f"{tmp_path / 'black.png'}=a fox", "--out", str(tmp_path / "o.png")]) == 0  # fmt: skip
    assert "'a fox' covers under 2%" in capsys.readouterr().err


def test_a_png_with_regions_reopens_with_its_region_layers(fake_window, qtbot, tmp_path):
    from noisebrush.engine.metadata import save_png

    left, right = halves()
    req = GenerationRequest("a scene", width=128, height=128, seed=1, regions=(Region(left, "a fox"), Region(right, "a pine")))
    save_png(np.zeros((128, 128, 3), np.uint8), req, tmp_path / "with-regions.png")
    w = fake_window
    w.state.update(width=128, height=128)
    with qtbot.waitSignal(w.files.files_read, timeout=10000):
        w.files.open_picture(str(tmp_path / "with-regions.png"))
    assert [r.prompt for r in w.doc.regions.values()] == ["a fox", "a pine"]
    captured = w.state.capture_request()
    assert [r.prompt for r in captured.regions] == ["a fox", "a pine"]
    assert np.array_equal(captured.regions[0].mask, left) and np.array_equal(captured.regions[1].mask, right)
    w.doc.undo_stack.undo()  # the whole restore is one step: the regions go with it
    assert not w.doc.regions


def test_flux_and_sd3_refuse_regions_locally_before_loading(runner, tmp_path):
    from tiny_flow import write_flux_folder

    folder = write_flux_folder(tmp_path / "tiny-flux", with_controlnet=False)
    left, _ = halves(64)
    req = GenerationRequest("x", model=str(folder), width=64, height=64, steps=1, regions=(Region(left, "a fox"),))
    with pytest.raises(UserError, match="not on FLUX models; a ComfyUI server") as caught:
        run(runner, req)
    assert "\n" not in str(caught.value) and not runner.models.is_loaded(str(folder))  # nothing was loaded


def test_the_per_block_fast_path_paints_what_the_masked_softmax_over_every_token_paints(runner):

    left, right = halves()
    blob = np.zeros((128, 128), np.uint8)
    blob[30:70, 50:90] = 255  # overlaps both halves: borders where pooled masks meet at every level
    req = GenerationRequest(
        "",
        width=128,
        height=128,
        steps=8,
        seed=2,
        regions=(Region(left, "a red circle on a red background"), Region(right, "a blue square"), Region(blob, "a green star")),
    )
    fast = run(runner, req).astype(int)
    with region_masks(exact=True):
        slow = run(runner, req).astype(int)
    assert np.abs(fast - slow).max() <= 3 and np.abs(fast - slow).mean() < 0.5
