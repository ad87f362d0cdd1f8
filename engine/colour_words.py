"""Colour words as numbers: the embedded model reads each dictionary colour of a prompt as its CIELAB value.

MiniLM's token states say which object a colour word belongs to, but only roughly which colour it is: a perfect
linear reader of them places a quarter of unseen names more than ΔE 20 away (bench/colour_probe.py). So every
prompt token that belongs to a colour of `assets/colour_dictionary.json` (XKCD's and CSS's names, built by
training/colour_dictionary.py) gets a learned projection of that colour's CIELAB value added to its state. The
model folder's noisebrush.json names the projection's weights (`"colour_words"`); trained from zero, it starts as
the model without it. A word the dictionary lacks is read by MiniLM alone.

Phrases, longest first: a dictionary name ("dark olive green", "sky blue"); else an optional modifier ("light",
"dark", "pale", "deep", "bright") and an optional tint ("reddish", "bluish") before a name ("pale reddish brown"),
or a tint alone ("a bluish circle"). Matching works on MiniLM's word pieces, so "redwood" is not "red".
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

LAB = tuple[float, float, float]
TINT_SHARE = 0.3  # "reddish brown": this much of red's LAB, the rest brown's
TINT_ALONE_CHROMA = 0.75  # "a reddish circle": red, a little greyer
FREQUENCIES = (1.0, 2.0, 4.0)  # of the Fourier features of the LAB value (scaled to about [-1, 1])


def dictionary_file() -> Path:
    from noisebrush.engine.paths import assets_dir

    return assets_dir() / "colour_dictionary.json"


@lru_cache(maxsize=1)
def load_dictionary() -> dict:
    return json.loads(dictionary_file().read_text())


def modify(lab: LAB, dl: float, chroma: float) -> LAB:
    """A modifier's lightness shift and chroma scale, kept inside CIELAB's range."""
    return (min(100.0, max(0.0, lab[0] + dl)), lab[1] * chroma, lab[2] * chroma)


def mix(a: LAB, b: LAB, share_a: float) -> LAB:
    return tuple(share_a * x + (1 - share_a) * y for x, y in zip(a, b))  # type: ignore[return-value]


@dataclass(frozen=True)
class Phrase:
    start: int  # token positions [start, end)
    end: int
    lab: LAB


class ColourWords:
    """Finds the dictionary's colours in MiniLM token ids (the tokenizers library alone, no transformers)."""

    def __init__(self, tokenizer_file: Path, dictionary: dict, max_tokens: int) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self.tokenizer.enable_truncation(max_tokens)
        self.tokenizer.enable_padding(length=max_tokens, pad_id=0, pad_token="[PAD]")
        words = Tokenizer.from_file(str(tokenizer_file))
        words.no_padding()  # the file may carry its own padding and truncation
        words.no_truncation()

        def ids(text: str) -> tuple[int, ...]:
            return tuple(words.encode(text, add_special_tokens=False).ids)

        self.names = {ids(n): tuple(v) for n, v in dictionary["names"].items()}
        self.tints = {ids(n): tuple(v) for n, v in dictionary["tints"].items()}
        self.modifiers = {ids(n): (float(v["dL"]), float(v["chroma"])) for n, v in dictionary["modifiers"].items()}
        self.longest = max(map(len, (*self.names, *self.tints, *self.modifiers)))
        self.pieces = {i for token, i in words.get_vocab().items() if token.startswith("##")}

    def _match(self, table: dict, ids: Sequence[int], start: int):
        for length in range(min(self.longest, len(ids) - start), 0, -1):
            end = start + length
            key = tuple(ids[start:end])
            if key in table and (end == len(ids) or ids[end] not in self.pieces):  # whole words only
                return end, table[key]
        return None

    def _modified(self, ids: Sequence[int], i: int) -> Phrase | None:
        """[modifier] [tint] name, or [modifier] tint, starting at i."""
        j, lab = i, None
        modifier = self._match(self.modifiers, ids, j)
        j = modifier[0] if modifier else j
        tint = self._match(self.tints, ids, j)
        j = tint[0] if tint else j
        name = self._match(self.names, ids, j)
        if name is not None:
            lab, j = (mix(tint[1], name[1], TINT_SHARE) if tint else name[1]), name[0]
        elif tint is not None:
            lab = modify(tint[1], 0.0, TINT_ALONE_CHROMA)
        if lab is None:
            return None
        return Phrase(i, j, modify(lab, *modifier[1]) if modifier else lab)

    def phrases(self, ids: Sequence[int]) -> list[Phrase]:
        found, i = [], 0
        while i < len(ids):
            if ids[i] in self.pieces:
                i += 1
                continue
            name = self._match(self.names, ids, i)
            whole = Phrase(i, name[0], name[1]) if name else None
            built = self._modified(ids, i)
            # the longer reading wins ("pale" is an XKCD name, "pale reddish brown" a pale tint of one); a tie
            # keeps the dictionary's own name ("light blue")
            best = built if built is not None and (whole is None or built.end > whole.end) else whole
            if best is None:
                i += 1
                continue
            found.append(best)
            i = best.end
        return found

    def table(self, text: str) -> np.ndarray:
        """(max_tokens, 4): each token's L, a, b and 1 where it belongs to a colour phrase, zeros elsewhere. The
        tokens are the text encoder's own ([CLS] first, cut and padded as the pipeline does)."""
        ids = self.tokenizer.encode(text).ids
        out = np.zeros((len(ids), 4), np.float32)
        for p in self.phrases(ids):
            out[p.start : p.end] = (*p.lab, 1.0)
        return out


class ColourProjection(nn.Module):
    """CIELAB → a vector added to the token state: Fourier features of the scaled value, then one linear layer
    (zero at first, so a model starts exactly as it was)."""

    def __init__(self, width: int = 384) -> None:
        super().__init__()
        self.linear = nn.Linear(3 + 6 * len(FREQUENCIES), width)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, table: torch.Tensor) -> torch.Tensor:
        """table (…, 4) from ColourWords.table → (…, width), zero on tokens that are no colour."""
        scale = torch.tensor([50.0, 100.0, 100.0], device=table.device)
        x = table[..., :3] / scale - torch.tensor([1.0, 0.0, 0.0], device=table.device)  # L, a, b → about [-1, 1]
        feats = [x] + [f(math.pi * k * x) for k in FREQUENCIES for f in (torch.sin, torch.cos)]
        return self.linear(torch.cat(feats, dim=-1)) * table[..., 3:]


class ColourReader:
    """A model's colour words: the dictionary's matcher and its trained projection."""

    def __init__(self, words: ColourWords, projection: ColourProjection) -> None:
        self.words, self.projection = words, projection.eval().requires_grad_(False)

    @classmethod
    def load(cls, weights: Path, tokenizer_file: Path, max_tokens: int) -> ColourReader:
        from safetensors.torch import load_file

        projection = ColourProjection()
        projection.load_state_dict(load_file(weights), strict=True)
        return cls(ColourWords(tokenizer_file, load_dictionary(), max_tokens), projection)

    def add(self, states: torch.Tensor, text: str) -> torch.Tensor:
        """The text encoder's states (1, max_tokens, width) of `text`, with its colours added."""
        table = torch.from_numpy(self.words.table(text)).to(states.device)
        return states + self.projection(table).to(states.dtype)[None]


def reader_for(folder: Path | None, meta: dict) -> ColourReader | None:
    """The model folder's colour reader, when its noisebrush.json names one (the embedded model's does)."""
    name = meta.get("colour_words")
    if folder is None or not isinstance(name, str) or not (folder / name).is_file():
        return None
    from noisebrush.engine.text_encoder import MAX_TOKENS, minilm_dir

    return ColourReader.load(folder / name, minilm_dir() / "tokenizer.json", MAX_TOKENS)
