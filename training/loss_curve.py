"""Print a run's loss curve as text: python -m training.loss_curve runs/diffusion [--width 60 --height 12]."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def render(steps: np.ndarray, losses: np.ndarray, width: int = 60, height: int = 12) -> str:
    bins = np.array_split(np.arange(len(losses)), min(width, len(losses)))
    means = np.array([losses[b].mean() for b in bins])
    lo, hi = float(means.min()), float(means.max())
    rows = []
    for r in range(height):
        level = hi - (hi - lo) * r / max(1, height - 1)
        label = f"{level:8.4f} |" if r in (0, height - 1) else "         |"
        rows.append(label + "".join("*" if abs(m - level) <= (hi - lo) / (2 * max(1, height - 1)) else " " for m in means))
    rows.append("          " + "-" * len(means))
    rows.append(f"          step {int(steps[0])} … {int(steps[-1])}")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--width", type=int, default=60)
    ap.add_argument("--height", type=int, default=12)
    args = ap.parse_args()
    data = np.loadtxt(args.run / "loss.tsv", ndmin=2)
    print(render(data[:, 0], data[:, 1], args.width, args.height))


if __name__ == "__main__":
    main()
