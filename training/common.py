"""Shared bits of the training scripts: config, seeding, resumable checkpoints, loss logging."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


def load_config(path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    cfg = json.loads(Path(path).read_text())
    for item in overrides or []:
        key, _, value = item.partition("=")
        cfg[key] = json.loads(value) if value[:1] in "[{0123456789-tf" else value
    return cfg


def start_run(default_config: str) -> tuple[dict[str, Any], Path]:
    """Parse `--config FILE key=value ...`, seed torch, size its thread pool and make the output folder."""
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=default_config)
    ap.add_argument("overrides", nargs="*", help="config overrides as key=value (JSON values)")
    args = ap.parse_args()
    cfg = load_config(args.config, args.overrides)
    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(cfg["seed"])
    out = Path(cfg["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    return cfg, out


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC → float NCHW in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def save_state(out_dir: Path, step: int, optimizer: torch.optim.Optimizer, extra: dict | None = None) -> None:
    state = {"step": step, "optimizer": optimizer.state_dict(), "rng": torch.get_rng_state(), **(extra or {})}
    tmp = out_dir / "state.pt.tmp"
    torch.save(state, tmp)
    tmp.replace(out_dir / "state.pt")


def load_state(out_dir: Path) -> dict | None:
    path = out_dir / "state.pt"
    # tensors, numbers and dicts only: a state file is never unpickled as code (it may come from another machine)
    return torch.load(path, weights_only=True) if path.exists() else None


class LossLog:
    """Prints a smoothed loss curve and appends every value to loss.tsv for plotting."""

    def __init__(self, out_dir: Path, every: int = 10) -> None:
        self.path = out_dir / "loss.tsv"
        self.every = every
        self.window: list[float] = []
        self.parts: dict[str, list[float]] = {}
        self.t0 = time.time()

    def add(self, step: int, loss: float, **parts: float) -> None:
        """`parts` are extra loss terms (already inside `loss`), printed beside it."""
        self.window.append(loss)
        for k, v in parts.items():
            self.parts.setdefault(k, []).append(v)
        with self.path.open("a") as f:
            f.write(f"{step}\t{loss:.6f}\n")
        if step % self.every == 0:
            mean = sum(self.window) / len(self.window)
            rate = (time.time() - self.t0) / len(self.window)
            extra = "".join(f"  {k} {sum(v) / len(v):.4f}" for k, v in self.parts.items())
            print(f"step {step:6d}  loss {mean:.5f}{extra}  {rate:.2f} s/step", flush=True)
            self.window.clear()
            self.parts.clear()
            self.t0 = time.time()
