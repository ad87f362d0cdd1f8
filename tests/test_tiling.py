"""Print size, engine side: the tile plan and its blend, upscale models through spandrel, and tiled jobs in the
Engine (every tile runs, previews land in their boxes, cancel and failure end the job with nothing half-done)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from fake_backend import FakeBackend
from helpers import EventLog

from noisebrush.engine.backends.base import Stopped
from noisebrush.engine.composition import Region, Tiling
from noisebrush.engine.engine import Engine
from noisebrush.engine.errors import UserError
from noisebrush.engine.events import Cancelled, Failed, Finished, Preview
from noisebrush.engine.request import ControlSpec, GenerationRequest
from noisebrush.engine.tiling import Blend, default_overlap, plan_tiles, tile_request
from noisebrush.engine.upscale import check_scale, load_upscaler, upscale


def smooth_picture(h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.dstack([x * 200 // w + 20, y * 200 // h + 20, np.full((h, w), 90)]).astype(np.uint8)


@pytest.mark.parametrize("size", [(512, 512, 128, 32), (130, 200, 128, 32), (4096, 1000, 512, 128), (100, 64, 128, 32)])
def test_tiles_cover_the_picture_and_their_weights_sum_to_one(size):
    w, h, tile, overlap = size
    total = np.zeros((h, w))
    tiles = plan_tiles(w, h, tile, overlap)
    for t in tiles:
        assert t.x + t.width <= w and t.y + t.height <= h and t.width == min(tile, w)
        total[t.y : t.y + t.height, t.x : t.x + t.width] += t.weight()
    assert np.allclose(total, 1.0, atol=1e-5)


def tile_results(picture, tiles, shift):
    """What each tile 'came back as': its crop, brightened by a different amount per tile (as refined tiles differ)."""
    return [np.clip(picture[t.y : t.y + t.height, t.x : t.x + t.width].astype(int) + shift(t.index), 0, 255).astype(np.uint8)
            for t in tiles]  # fmt: skip


def test_tiles_that_differ_blend_without_a_step():
    picture = smooth_picture(512, 512)
    tiles = plan_tiles(512, 512, 128, 32)
    blend = Blend(512, 512)
    for t, image in zip(tiles, tile_results(picture, tiles, lambda i: 30 * (i % 2))):
        blend.add(t, image)
    out = blend.result().astype(int)
    # a tile's edge is where a hard paste would jump by 30 levels; blended, no pixel steps by more than the picture's
    # own slope (under 1 level a px) plus the hand-over's (1.5 × 30 / 32 px at the smoothstep's steepest)
    steps = max(np.abs(np.diff(out, axis=0)).max(), np.abs(np.diff(out, axis=1)).max())
    assert steps <= 3, steps
    same = [Blend(512, 512) for _ in range(1)][0]
    for t in tiles:
        same.add(t, picture[t.y : t.y + t.height, t.x : t.x + t.width])
    assert np.array_equal(same.result(), picture)  # tiles that agree give back the picture exactly


def test_a_tile_request_is_the_crop_of_everything_but_the_references():
    pic = smooth_picture(256, 384)
    depth = np.zeros((256, 384, 3), np.uint8)
    depth[:, 200:] = 255
    mask = np.zeros((256, 384), np.uint8)
    mask[:, :100] = 255
    full = GenerationRequest("a field", init_image=pic, width=384, height=256, strength=0.4, seed=10,
                             controls=(ControlSpec("depth", depth),), regions=(Region(mask, "a tree"),),
                             tiling=Tiling(tile=128))  # fmt: skip
    full.validate()
    tiles = plan_tiles(384, 256, 128, 32)
    right = tile_request(full, pic, tiles[-1])
    right.validate()
    t = tiles[-1]
    assert (right.width, right.height, right.tiling) == (128, 128, None)
    assert np.array_equal(right.init_image, pic[t.y :, t.x :])
    assert np.array_equal(right.controls[0].image, depth[t.y :, t.x :]) and right.controls[0].image.min() == 255
    assert right.regions == ()  # the tree's region lies left of this tile
    assert tile_request(full, pic, tiles[0]).regions[0].prompt == "a tree"
    assert right.seed != tile_request(full, pic, tiles[0]).seed  # its own noise


# --- upscale models --------------------------------------------------------------------------------------------
def tiny_upscaler(path, scale=4, fmt="safetensors"):
    """A RealESRGAN-compact network of a few thousand weights, as spandrel detects real ones."""
    from safetensors.torch import save_file
    from spandrel.architectures.Compact import Compact

    torch.manual_seed(0)
    net = Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=scale)
    if fmt == "safetensors":
        save_file(net.state_dict(), str(path))
    else:
        torch.save({"params_ema": net.state_dict()}, str(path))  # how BasicSR trainers save them
    return path


@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_an_upscale_model_gives_the_asked_size(tmp_path, fmt):
    up = load_upscaler(tiny_upscaler(tmp_path / f"4x-tiny.{fmt}", fmt=fmt))
    assert up.scale == 4
    out = upscale(smooth_picture(48, 40), 120, 144, up)  # one 4× pass, then Lanczos down to the asked size
    assert out.shape == (144, 120, 3) and out.dtype == np.uint8
    assert upscale(smooth_picture(48, 40), 320, 384, up).shape == (384, 320, 3)  # two passes


def test_a_large_picture_is_upscaled_in_tiles_like_in_one_piece(tmp_path):
    up = load_upscaler(tiny_upscaler(tmp_path / "2x.safetensors", scale=2))
    pic = np.random.default_rng(1).integers(0, 256, (300, 420, 3), np.uint8)
    tiled = up.run(pic)  # 300×420 is over one 256 px tile
    x = torch.from_numpy(pic).permute(2, 0, 1)[None].float() / 255
    with torch.inference_mode():
        whole = (up.descriptor(x).clamp(0, 1)[0].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    assert tiled.shape == whole.shape == (600, 840, 3)
    assert np.abs(tiled.astype(int) - whole.astype(int)).mean() < 1.0


def test_lanczos_when_there_is_no_model():
    assert upscale(smooth_picture(32, 48), 192, 128).shape == (128, 192, 3)


def test_bad_upscalers_and_scales_say_one_sentence(tmp_path):
    (tmp_path / "notes.safetensors").write_bytes(b"not a model at all")
    with pytest.raises(UserError, match="notes.safetensors"):
        load_upscaler(tmp_path / "notes.safetensors")
    from safetensors.torch import save_file

    save_file({"some.weight": torch.zeros(3, 3)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(UserError, match="not an upscale model Noisebrush knows"):
        load_upscaler(tmp_path / "other.safetensors")
    torch.save(torch.nn.Conv2d(3, 3, 1), str(tmp_path / "code.pth"))  # a whole pickled object, not weights
    with pytest.raises(UserError, match="more than plain weights"):
        load_upscaler(tmp_path / "code.pth")
    (tmp_path / "x.ckpt").write_bytes(b"\x80\x04")
    with pytest.raises(UserError, match="pickle"):
        load_upscaler(tmp_path / "x.ckpt")
    for scale in (0, 100):
        with pytest.raises(UserError, match="scale must be from 1 to 8"):
            check_scale(scale, 128, 128)
    with pytest.raises(UserError, match="up to 8192 px"):
        check_scale(8, 2048, 1024)


@pytest.mark.parametrize("shape, words", [((1, 1), "16 to 8192 px"), ((100, 20000), "scale it down")])
def test_a_picture_too_small_or_too_large_to_upscale(shape, words):
    req = GenerationRequest("x", init_image=np.zeros((*shape, 3), np.uint8), width=512, height=512, strength=0,
                            tiling=Tiling())  # fmt: skip
    with pytest.raises(UserError, match=words):
        req.validate()


# --- tiled jobs in the Engine -----------------------------------------------------------------------------------
class ShiftBackend(FakeBackend):
    """Returns each tile's init image brightened by 40 on every other tile, with a preview per step."""

    def run(self, job_id, request, emit, cancelled):
        self.requests.append(request)
        index = len(self.requests) - 1
        start = request.init_image if request.init_image is not None else np.zeros((request.height, request.width, 3))
        image = np.clip(start.astype(int) + 40 * (index % 2), 0, 255).astype(np.uint8)
        steps = max(1, int(request.steps * request.strength))
        for step in range(1, steps + 1):
            if cancelled.wait(self.step_s):
                raise Stopped(step - 1)
            emit(Preview(job_id, step, steps, image[::8, ::8].copy(), 0.0))
        emit(Finished(job_id, image, request, 0.0, "shift"))


def tiled(width=384, height=256, **kw) -> GenerationRequest:
    base = dict(prompt="a field", init_image=smooth_picture(height // 4, width // 4), width=width, height=height,
                strength=0.5, steps=4, seed=5, tiling=Tiling(tile=128))  # fmt: skip
    return GenerationRequest(**{**base, **kw})


def engine_with(backend) -> Engine:
    eng = Engine(backend)
    eng.log = EventLog()
    eng.add_listener(eng.log)
    return eng


def test_every_tile_runs_previews_land_in_their_boxes_and_the_blend_has_no_seam():
    backend = ShiftBackend(step_s=0.001)
    with engine_with(backend) as eng:
        job = eng.submit(tiled())
        done = eng.log.wait_end(job)
        assert isinstance(done, Finished), done
    tiles = plan_tiles(384, 256, 128, default_overlap(128))
    assert len(backend.requests) == len(tiles) == 15
    assert sorted((r.width, r.height) for r in backend.requests) == [(128, 128)] * 15
    previews = eng.log.of(job, Preview)
    assert previews[0].box is None and previews[0].image.shape == (256, 384, 3)  # the upscaled picture first
    boxes = {p.box for p in previews[1:]}
    assert boxes == {t.box for t in tiles}  # every tile streamed into its place
    assert previews[-1].step == previews[-1].total == 15 * 2  # one count over tiles × steps
    assert [p.step for p in previews] == sorted(p.step for p in previews)
    out = done.image.astype(int)
    assert done.image.shape == (256, 384, 3)
    assert max(np.abs(np.diff(out, axis=0)).max(), np.abs(np.diff(out, axis=1)).max()) <= 8  # 40 levels, handed over


def test_cancel_stops_every_tile_within_a_step_and_keeps_nothing():
    backend = ShiftBackend(step_s=0.05)
    with engine_with(backend) as eng:
        job = eng.submit(tiled(width=512, height=512))
        while not eng.log.q.qsize() or len(backend.requests) < 1:
            threading.Event().wait(0.01)
        threading.Event().wait(0.08)
        eng.cancel(job)
        end = eng.log.wait_end(job, timeout=5)
        assert isinstance(end, Cancelled)
        ran = len(backend.requests)
        assert ran < len(plan_tiles(512, 512, 128, default_overlap(128)))
        assert not eng.log.of(job, Finished)
        threading.Event().wait(0.2)
        assert len(backend.requests) == ran and not eng.busy  # no tile started after the cancel


def test_a_newer_request_wins_over_a_tiled_job():
    backend = ShiftBackend(step_s=0.05)
    with engine_with(backend) as eng:
        first = eng.submit(tiled(width=512, height=512))
        threading.Event().wait(0.15)
        second = eng.submit(GenerationRequest("x", steps=2, width=64, height=64), latest_wins=True)
        assert isinstance(eng.log.wait_end(first, timeout=5), Cancelled)
        assert isinstance(eng.log.wait_end(second, timeout=5), Finished)


def test_a_failing_tile_fails_the_job_in_one_sentence():
    class Failing(ShiftBackend):
        def run(self, job_id, request, emit, cancelled):
            if len(self.requests) == 3:
                self.requests.append(request)
                raise UserError("the server ran out of memory")
            super().run(job_id, request, emit, cancelled)

    with engine_with(Failing(step_s=0.001)) as eng:
        end = eng.log.wait_end(eng.submit(tiled()))
    assert isinstance(end, Failed) and end.message == "tile 4 of 15: the server ran out of memory"


def test_upscale_only_needs_no_backend_and_a_bad_upscaler_fails_before_any_tile(tmp_path):
    backend = ShiftBackend()
    with engine_with(backend) as eng:
        done = eng.log.wait_end(eng.submit(tiled(strength=0)))
        (tmp_path / "bad.pth").write_bytes(b"nonsense")
        bad = eng.log.wait_end(eng.submit(tiled(tiling=Tiling(upscaler=str(tmp_path / "bad.pth")))))
    assert isinstance(done, Finished) and done.image.shape == (256, 384, 3) and done.model_name == "Lanczos"
    assert isinstance(bad, Failed) and "bad.pth" in bad.message
    assert backend.requests == []


def test_a_tiled_refine_on_the_embedded_model_follows_the_picture_and_reproduces():
    from helpers import logged_engine

    source = np.zeros((64, 64, 3), np.uint8)
    source[:] = (30, 60, 200)
    source[16:48, 16:48] = (220, 40, 30)  # a red square on blue
    req = GenerationRequest("a red square on a blue background", init_image=source, width=256, height=256,
                            strength=0.4, steps=10, seed=11, tiling=Tiling())  # fmt: skip
    eng = logged_engine()
    try:
        a = eng.log.wait_end(eng.submit(req))
        b = eng.log.wait_end(eng.submit(req))
    finally:
        assert eng.shutdown(30)
    assert isinstance(a, Finished), a
    assert len({p.box for p in eng.log.of(a.job_id, Preview)} - {None}) == 9  # 128 px tiles (the model's size) over 256
    assert np.array_equal(a.image, b.image)  # the same seed twice
    upscaled = upscale(source, 256, 256)
    assert np.abs(a.image.astype(int) - upscaled.astype(int)).mean() < 40  # refined, not repainted
    centre, corner = a.image[112:144, 112:144].mean(axis=(0, 1)), a.image[:24, :24].mean(axis=(0, 1))
    assert centre[0] > centre[2] and corner[2] > corner[0]  # the square stays red, the background blue


def test_a_tile_controlnet_gets_each_tiles_own_source():
    pic = smooth_picture(256, 256)
    full = GenerationRequest("a field", init_image=pic, width=256, height=256, strength=0.6, seed=1,
                             tiling=Tiling(tile=128, controlnet="control_v11f1e_sd15_tile", controlnet_weight=0.7))  # fmt: skip
    tiles = plan_tiles(256, 256, 128, default_overlap(128))
    last = tile_request(full, pic, tiles[-1])
    (tile,) = last.controls
    assert (tile.kind, tile.model, tile.weight) == ("tile", "control_v11f1e_sd15_tile", 0.7)
    assert np.array_equal(tile.image, last.init_image)  # the ControlNet sees the very crop it refines
    off = full.replace(tiling=Tiling(tile=128, controlnet="control_v11f1e_sd15_tile", controlnet_weight=0))
    assert tile_request(off, pic, tiles[0]).controls == ()
    with pytest.raises(UserError, match="weight must be from 0 to 2"):
        Tiling(controlnet="x", controlnet_weight=3)


def test_a_tile_controlnet_runs_with_every_tile_on_the_local_engine(tiny_model):
    from helpers import logged_engine

    net = f"{tiny_model}/controlnets/scribble"  # any SD1.5 ControlNet stands in for a tile one here
    base = dict(prompt="a field", init_image=smooth_picture(64, 64), width=128, height=128, strength=0.6, steps=4,
                seed=2, model=tiny_model, scheduler="Euler")  # fmt: skip
    eng = logged_engine()
    try:
        plain = eng.log.wait_end(eng.submit(GenerationRequest(**base, tiling=Tiling(tile=64))))
        held_tiling = Tiling(tile=64, controlnet=net, controlnet_weight=1.5)
        held = eng.log.wait_end(eng.submit(GenerationRequest(**base, tiling=held_tiling)))
    finally:
        assert eng.shutdown(30)
    assert isinstance(plain, Finished) and isinstance(held, Finished), (plain, held)
    assert np.abs(plain.image.astype(int) - held.image.astype(int)).mean() > 1.0  # the ControlNet took part
