"""Fine-tune the embedded model on the open colour vocabulary (issue 17): train_diffusion with another world.

    python -m training.train_vocab [--config training/configs/diffusion-vocab.json] [key=value ...]

train_diffusion's pools draw from `generate` (any sample) and `multi_shape_scene` (the focus scenes, with
grounding targets from `phrase_targets`). This swaps those three for versions that mix the old world (so what the
model already does is kept) with training/vocab_world.py's scenes, then runs train_diffusion unchanged.
The config's "vocab" block sets the mix: {"share": main pool share of vocab scenes, "focus_share": ...,
"templates": "train" (the 14 templates) or "grammar" (hundreds of sentence shapes, training/vocab_world.py)}.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

import cv2
import numpy as np

from training import grounding, train_diffusion
from training.common import load_config
from training.grounding import MAX_OBJECTS
from training.vocab_world import VocabSample, vocab_scene
from training.world import Sample, generate


def mixed_world(share: float, templates: str = "train") -> Callable[..., Sample]:
    def draw(rng: np.random.Generator, size: int = 128, kind: str | None = None) -> Sample:
        if kind is None and rng.random() < share:
            return vocab_scene(rng, size, templates=templates)
        return generate(rng, size, kind)

    return draw


def mixed_focus(share: float, templates: str = "train") -> Callable[[np.random.Generator, int], Sample]:
    old = train_diffusion.multi_shape_scene

    def draw(rng: np.random.Generator, size: int) -> Sample:
        if rng.random() < share:
            return vocab_scene(rng, size, templates=templates, n_shapes=int(rng.integers(2, 4)))
        return old(rng, size)

    return draw


def phrase_targets(sample: Sample, tokenizer: Callable, lat_size: int) -> tuple[np.ndarray, np.ndarray]:
    """grounding.phrase_targets for vocabulary scenes too: their phrases come with the sample (any word order)."""
    if not isinstance(sample, VocabSample):
        return grounding.phrase_targets(sample, tokenizer, lat_size)
    n_tok = tokenizer.model_max_length
    masks = np.zeros((MAX_OBJECTS, lat_size, lat_size), np.float16)
    tokens = np.zeros((MAX_OBJECTS, n_tok), bool)
    offsets = tokenizer(sample.caption, padding="max_length", truncation=True, return_offsets_mapping=True)["offset_mapping"]
    for i, (obj, spans) in enumerate(zip(sample.objects[:MAX_OBJECTS], sample.phrases)):
        cover = cv2.resize(obj.mask.astype(np.float32), (lat_size, lat_size), interpolation=cv2.INTER_AREA)
        if cover.sum() < 0.5:
            continue
        masks[i] = cover
        tokens[i] = [e > s and any(s < b and e > a for a, b in spans) for s, e in offsets]
    return masks, tokens


def install(mix: dict) -> None:
    """Swap train_diffusion's world for the mixed one (in the trainer, and in each spawned pool worker)."""
    if getattr(train_diffusion.generate, "vocab_mix", None) == mix:
        return
    templates = mix.get("templates", "train")
    train_diffusion.generate = mixed_world(mix["share"], templates)  # type: ignore[assignment]
    train_diffusion.generate.vocab_mix = mix  # type: ignore[attr-defined]
    train_diffusion.multi_shape_scene = mixed_focus(mix["focus_share"], templates)  # type: ignore[assignment]
    train_diffusion.phrase_targets = phrase_targets  # type: ignore[assignment]


def main() -> None:
    argv = sys.argv[1:]
    path = argv[argv.index("--config") + 1] if "--config" in argv else "training/configs/diffusion-vocab.json"
    if "--config" not in argv:
        sys.argv[1:1] = ["--config", path]
    mix = load_config(path).get("vocab", {"share": 0.6, "focus_share": 0.7})
    train_diffusion.install_world((__name__ if __name__ != "__main__" else "training.train_vocab", mix))
    print("vocab mix:", json.dumps(mix), flush=True)
    train_diffusion.main()


if __name__ == "__main__":
    main()
