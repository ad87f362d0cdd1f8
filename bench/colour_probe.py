"""How much of a colour name's colour MiniLM's token states carry: the ceiling for issue 17's held-out names.

    python bench/colour_probe.py

The embedded model reads colour words only through MiniLM's token states, so a name whose states do not say
its colour cannot be painted right however long the model trains. This fits a ridge regression from the
states of each training name (training/colour_vocab.json, in four caption contexts) to its CIELAB colour and
scores the held-out names the bench uses: CIEDE2000 between prediction and the name's RGB, the share within 20
(the issue's target), the median. For scale: the nearest of the ten palette colours (a model that knew only the
basic names and picked the right one) and a nearest-neighbour guess from the training names.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from skimage.color import lab2rgb  # noqa: E402

from noisebrush.engine.text_encoder import load_minilm  # noqa: E402
from training.colour_vocab import delta_e, lab, load_vocab  # noqa: E402
from training.world import PALETTE  # noqa: E402

CONTEXTS = ("a {} square on a white background", "a {} background", "{}", "a circle painted {}")


def name_states(name: str, tokenizer, encoder) -> np.ndarray:
    """The mean token state of the name's own tokens in each context, concatenated."""
    parts = []
    for context in CONTEXTS:
        text, start = context.format(name), context.index("{}")
        batch = tokenizer(text, return_offsets_mapping=True, return_tensors="pt")
        offsets = batch.pop("offset_mapping")[0].tolist()
        with torch.no_grad():
            states = encoder(**batch)[0][0]
        mine = torch.tensor([a < start + len(name) and b > start and b > a for a, b in offsets])
        parts.append(states[mine].mean(0).numpy())
    return np.concatenate(parts)


def fit_ridge(x: np.ndarray, y: np.ndarray, alpha: float):
    """Ridge regression on standardised features; returns the predictor."""
    mu, sd = x.mean(0), x.std(0) + 1e-6
    a = (x - mu) / sd
    w = np.linalg.solve(a.T @ a + alpha * np.eye(a.shape[1]), a.T @ (y - y.mean(0)))
    return lambda new: ((new - mu) / sd) @ w + y.mean(0)


def to_rgb(lab_values: np.ndarray) -> np.ndarray:
    return np.clip(lab2rgb(lab_values.reshape(-1, 1, 3)).reshape(-1, 3), 0, 1) * 255


def report(label: str, predicted_rgb: np.ndarray, truth_rgb: np.ndarray) -> None:
    de = delta_e(predicted_rgb, truth_rgb)
    print(f"{label:<44} within ΔE 20: {(de <= 20).mean():.3f}   median ΔE: {np.median(de):.1f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--alpha", type=float, default=300.0, help="ridge penalty on standardised states")
    args = ap.parse_args()
    tokenizer, encoder = load_minilm()
    vocab = load_vocab()
    train, held = vocab.names("train"), vocab.names("held_out")
    x_train = np.stack([name_states(n, tokenizer, encoder) for n in train])
    x_held = np.stack([name_states(n, tokenizer, encoder) for n in held])
    y_train = lab(np.array([vocab.rgb(n) for n in train], float))
    truth = np.array([vocab.rgb(n) for n in held], float)
    print(f"{len(train)} training names, {len(held)} held out; MiniLM states of {len(CONTEXTS)} contexts, {x_train.shape[1]}-d")
    report("ridge regression states → CIELAB", to_rgb(fit_ridge(x_train, y_train, args.alpha)(x_held)), truth)
    a, b = (x - x_train.mean(0) for x in (x_train, x_held))
    cos = (b / np.linalg.norm(b, axis=1, keepdims=True)) @ (a / np.linalg.norm(a, axis=1, keepdims=True)).T
    report("nearest training name (cosine)", to_rgb(y_train[cos.argmax(1)]), truth)
    palette = np.array(list(PALETTE.values()), float)
    nearest = palette[[int(np.argmin(delta_e(np.repeat(t[None], len(palette), 0), palette))) for t in truth]]
    report("the right one of the ten basic colours", nearest, truth)


if __name__ == "__main__":
    main()
