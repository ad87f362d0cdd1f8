"""bench/gpu.py runs at tiny sizes on the CPU (a smoke test: no timing is asserted), and the engine's speed options
(noisebrush.engine.speed) keep what the models compute."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_bench_tiny_prints_every_row():
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu.py"), "--tiny"], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    head = [line for line in lines if line.startswith("| card | model | size | CNs | option |")]
    assert len(head) == 1, proc.stdout[-3000:]
    columns = [c.strip() for c in head[0].strip("|").split("|")]
    for family, n_cn, option in [("sd15", 1, "base"), ("sd15", 2, "base"), ("sd15", 1, "lcm4"), ("sdxl", 1, "base"),
                                 ("sdxl", 1, "lcm4"), ("sd15", 1, "channels_last"), ("sd15", 1, "fuse_qkv")]:  # fmt: skip
        rows = [line for line in lines if line.startswith(f"| CPU | {family} | 64 | {n_cn} | {option} |")]
        assert len(rows) == 1, (family, n_cn, option, proc.stdout[-3000:])
        cells = [c.strip() for c in rows[0].strip("|").split("|")]
        assert len(cells) == len(columns) and "skipped" not in rows[0], rows[0]
        float(cells[columns.index("it/s bare")]), float(cells[columns.index("it/s engine")])  # numbers, whatever they are


def _tiny_unet():
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8, cross_attention_dim=16, attention_head_dim=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        sample_size=8,
    ).eval()  # fmt: skip


def test_speed_options_keep_the_output_and_apply_once():
    import torch

    from noisebrush.engine import speed
    from noisebrush.engine.device import LoadOptions

    unet = _tiny_unet()
    x, t, ctx = torch.randn(2, 4, 8, 8), torch.tensor([10, 10]), torch.randn(2, 5, 16)
    with torch.inference_mode():
        before = unet(x, t, ctx).sample
    options = LoadOptions(channels_last=True, fuse_qkv=True, attention="flash")
    assert speed.wanted(options, "cpu") == ("channels_last", "fuse_qkv")  # forcing a fused kernel is for CUDA only
    parts = {"unet": unet, "vae": torch.nn.Identity()}
    model = SimpleNamespace(options=options, device=SimpleNamespace(device="cpu"), components=parts)
    speed.prepare(model, [])
    assert speed.applied(unet) == ("channels_last", "fuse_qkv")
    speed.prepare(model, [])  # a second pipeline over the same modules applies nothing twice
    assert speed.applied(unet) == ("channels_last", "fuse_qkv")
    with torch.inference_mode():
        after = unet(x, t, ctx).sample
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)


def test_speed_options_off_by_default_and_checked():
    from noisebrush.engine import speed
    from noisebrush.engine.device import LoadOptions
    from noisebrush.engine.errors import UserError

    assert speed.wanted(LoadOptions(), "cuda") == ()
    assert speed.wanted(LoadOptions(attention="efficient", cudnn_benchmark=True), "cuda") == (
        "attention=efficient",
        "cudnn_benchmark",
    )
    with pytest.raises(UserError, match="attention backend"):
        speed.wanted(LoadOptions(attention="fastest"), "cuda")
