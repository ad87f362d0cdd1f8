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
    return Path(__file__).resolve().parent.parent / "assets"


def default_model_dir() -> Path:
    return assets_dir() / "models" / "default"
