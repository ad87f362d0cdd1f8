"""A tiny Depth Anything model saved in the Hugging Face cache layout, to exercise the real loading path offline."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, DPTImageProcessor

from noisebrush.engine.preprocess import DEPTH_ANYTHING_REPO


def write_tiny_depth_anything(cache_dir: Path, revision: str = "0123456789abcdef0123456789abcdef01234567") -> Path:
    torch.manual_seed(0)
    backbone = Dinov2Config(
        hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64, image_size=56,
        patch_size=14, out_features=["stage1", "stage2", "stage3", "stage4"], reshape_hidden_states=False,
    )  # fmt: skip
    config = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=32, neck_hidden_sizes=[8, 16, 32, 32],
                                 fusion_hidden_size=16, head_hidden_size=8, patch_size=14)  # fmt: skip
    model = DepthAnythingForDepthEstimation(config)
    repo_dir = cache_dir / ("models--" + DEPTH_ANYTHING_REPO.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / revision
    model.save_pretrained(snapshot)
    DPTImageProcessor(size={"height": 56, "width": 56}, keep_aspect_ratio=True, ensure_multiple_of=14).save_pretrained(snapshot)
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(revision)
    return snapshot
