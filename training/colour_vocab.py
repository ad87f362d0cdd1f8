"""An open colour vocabulary for the world: CSS4 and XKCD colour names with their RGB, split train / held out.

    python -m training.colour_vocab      # rebuild training/colour_vocab.json (needs matplotlib: pip install .[train])

The table is committed, so training, the bench and the tests need no matplotlib. 20 % of the names (seeded) are
held out of training; the bench scores the model on them (bench/model_vocab.py).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from skimage.color import deltaE_ciede2000, rgb2lab

from training.world import PALETTE

VOCAB_FILE = Path(__file__).with_name("colour_vocab.json")
HELD_OUT_SHARE, SPLIT_SEED = 0.2, 17
# The words of issue 17's failing prompts: they must be learnt, so they never land in the held-out split.
ALWAYS_TRAIN = ("crimson", "scarlet", "navy", "emerald", "golden", "violet", "lime", "gold", "azure", "grey", "gray")
# XKCD survey names nobody wants in a caption.
_UNWANTED = re.compile(r"shit|puke|vomit|poo|barf|booger|snot|diarrh|piss|sick")


@dataclass(frozen=True)
class Vocab:
    train: dict[str, tuple[int, int, int]]
    held_out: dict[str, tuple[int, int, int]]

    def names(self, split: str) -> list[str]:
        return sorted(self.train if split == "train" else self.held_out)

    def rgb(self, name: str) -> tuple[int, int, int]:
        return self.train.get(name) or self.held_out[name]


def _segment(name: str, words: set[str]) -> str:
    """'darkslateblue' → 'dark slate blue' with words from the XKCD names (fewest words); unchanged if impossible."""
    best: list[list[str] | None] = [[]] + [None] * len(name)
    for end in range(1, len(name) + 1):
        for start in range(end):
            w, head = name[start:end], best[start]
            if head is not None and w in words and (best[end] is None or len(head) + 1 < len(best[end])):
                best[end] = head + [w]
    return " ".join(best[-1]) if best[-1] else name


def build_table() -> dict[str, dict[str, tuple[int, int, int]]]:
    """The vocabulary from matplotlib's CSS4 and XKCD tables: CSS names win a clash (the ones web users know); the
    ten basic names keep the palette's RGB, which the model was first trained on."""
    from matplotlib.colors import CSS4_COLORS, XKCD_COLORS, to_rgb

    def rgb(hex_: str) -> tuple[int, int, int]:
        return tuple(int(round(v * 255)) for v in to_rgb(hex_))  # type: ignore[return-value]

    table: dict[str, tuple[int, int, int]] = {}
    for key, hex_ in XKCD_COLORS.items():
        name = key.removeprefix("xkcd:").replace("/", " ").replace("'", "").strip()
        if not _UNWANTED.search(name):
            table[name] = rgb(hex_)
    words = {w for n in table for w in n.split()} | {"gray"}  # CSS spells it so; XKCD says "grey"
    for key, hex_ in CSS4_COLORS.items():
        table[_segment(key, words)] = rgb(hex_)
    table.update(PALETTE)
    rng = np.random.default_rng(SPLIT_SEED)
    pool = sorted(n for n in table if n not in PALETTE and n not in ALWAYS_TRAIN)
    held = set(rng.choice(pool, size=int(round(HELD_OUT_SHARE * len(pool))), replace=False).tolist())
    return {
        "train": {n: table[n] for n in sorted(table) if n not in held},
        "held_out": {n: table[n] for n in sorted(held)},
    }


@lru_cache(maxsize=1)
def load_vocab() -> Vocab:
    data = json.loads(VOCAB_FILE.read_text())
    return Vocab(*({k: tuple(v) for k, v in data[s].items()} for s in ("train", "held_out")))  # type: ignore[arg-type]


def lab(rgb) -> np.ndarray:
    """CIELAB (D65) of RGB values in 0–255, any leading shape."""
    arr = np.asarray(rgb, np.float64).reshape(-1, 1, 3) / 255.0
    return rgb2lab(arr).reshape(np.shape(rgb))


def delta_e(rgb_a, rgb_b) -> np.ndarray:
    """CIEDE2000 colour difference of RGB values (0–255)."""
    return deltaE_ciede2000(lab(rgb_a), lab(rgb_b))


def main() -> None:
    data = build_table()
    meta = {"source": "matplotlib CSS4_COLORS + XKCD_COLORS; basic names from training.world.PALETTE",
            "held_out_share": HELD_OUT_SHARE, "split_seed": SPLIT_SEED}  # fmt: skip
    VOCAB_FILE.write_text(json.dumps({**meta, **data}, indent=0) + "\n")
    print(f"{VOCAB_FILE}: {len(data['train'])} training names, {len(data['held_out'])} held out")


if __name__ == "__main__":
    main()
