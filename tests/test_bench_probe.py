"""bench/colour_probe.py's figure: it reads each colour name's own token states, and a probe fitted on some names
says something true about names it never saw (the ceiling the model card quotes rests on both)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from colour_probe import CONTEXTS, fit_ridge, name_states, to_rgb  # noqa: E402

from noisebrush.engine.text_encoder import load_minilm  # noqa: E402
from training.colour_vocab import delta_e, lab, load_vocab  # noqa: E402


def test_a_names_states_are_its_own_tokens_in_each_context():
    tokenizer, encoder = load_minilm()
    states = name_states("dark slate blue", tokenizer, encoder)
    assert states.shape == (len(CONTEXTS) * encoder.config.hidden_size,)
    batch = tokenizer("a dark slate blue square on a white background", return_tensors="pt")
    with torch.no_grad():
        every = encoder(**batch)[0][0]
    tokens = tokenizer.convert_ids_to_tokens(batch["input_ids"][0])
    assert tokens[2:5] == ["dark", "slate", "blue"]
    assert np.allclose(states[: encoder.config.hidden_size], every[2:5].mean(0).numpy(), atol=1e-5)


def test_a_probe_fitted_on_some_names_beats_guessing_the_mean_colour_on_others():
    tokenizer, encoder = load_minilm()
    vocab = load_vocab()
    train, held = vocab.names("train")[::4], vocab.names("held_out")[::4]  # 193 and 47 names: a few seconds
    x = {n: name_states(n, tokenizer, encoder) for n in train + held}
    y_train = lab(np.array([vocab.rgb(n) for n in train], float))
    truth = np.array([vocab.rgb(n) for n in held], float)
    probe = fit_ridge(np.stack([x[n] for n in train]), y_train, alpha=300.0)
    predicted = delta_e(to_rgb(probe(np.stack([x[n] for n in held]))), truth)
    mean_guess = delta_e(to_rgb(np.repeat(y_train.mean(0, keepdims=True), len(held), 0)), truth)
    assert np.median(predicted) < 0.7 * np.median(mean_guess), (np.median(predicted), np.median(mean_guess))
