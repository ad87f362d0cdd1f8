"""Where Noisebrush's bundled files live, in a checkout, a wheel or a PyInstaller bundle."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def assets_dir() -> Path:
    env = os.environ.get("NOISEBRUSH_ASSETS")
    if env:
        return Path(env)
    bundle = getattr(sys, "_MEIPASS", None)  # PyInstaller one-folder bundle
    if bundle:
        return Path(bundle) / "assets"
    # a checkout keeps assets/ beside engine/; an install keeps them beside noisebrush/engine/ (package data)
    return Path(__file__).resolve().parent.parent / "assets"


def installed_share() -> Path:
    return Path(sys.prefix) / "share" / "noisebrush"


def single_file_configs_dir() -> Path:
    """Config folders that let from_single_file open checkpoints with no Hub call (see packaging/make_configs.py)."""
    env = os.environ.get("NOISEBRUSH_SINGLE_FILE_CONFIGS")
    return Path(env) if env else assets_dir() / "configs"


def default_model_dir() -> Path:
    return assets_dir() / "models" / "default"


def clip_tokenizers() -> dict:
    """CLIP-L's tokenizer and OpenCLIP-G's (same BPE, padded with "!"), from the one copy bundled with the SD1.5
    configs: SDXL, SD3 and Flux single files all use them (a copy per family would be 1.5 MB each)."""
    from transformers import CLIPTokenizer

    from noisebrush.engine.errors import UserError

    clip = single_file_configs_dir() / "sd15" / "tokenizer"
    if not clip.is_dir():
        raise UserError(f"the bundled tokenizers are missing from {clip}; reinstall Noisebrush")
    return {"tokenizer": CLIPTokenizer.from_pretrained(clip), "tokenizer_2": CLIPTokenizer.from_pretrained(clip, pad_token="!")}
