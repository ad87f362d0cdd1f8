"""Build the app's colour dictionary, `assets/colour_dictionary.json` (read by noisebrush/engine/colour_words.py).

    python -m training.colour_dictionary

Names: every name of training/colour_vocab.json (XKCD's colour survey, CC0, and the CSS colour names, from
matplotlib's tables; the basic ten at the palette's RGB), the held-out ones included: the dictionary is how the
app reads a name that training never showed. Each name's value is its CIELAB (D65) colour. Modifiers change
lightness and chroma; tints ("reddish") lean a following name towards a hue. The app needs neither matplotlib nor
scikit-image: only this file.
"""

from __future__ import annotations

import json
from pathlib import Path

from training.colour_vocab import lab, load_vocab

OUT = Path(__file__).resolve().parent.parent / "assets" / "colour_dictionary.json"
# lightness shift (CIELAB L, 0–100) and chroma scale of each modifier
MODIFIERS = {
    "light": {"dL": 18, "chroma": 0.85},
    "dark": {"dL": -20, "chroma": 0.95},
    "pale": {"dL": 22, "chroma": 0.5},
    "deep": {"dL": -12, "chroma": 1.15},
    "bright": {"dL": 6, "chroma": 1.25},
    "pastel": {"dL": 20, "chroma": 0.55},
    "dull": {"dL": -4, "chroma": 0.6},
    "muted": {"dL": -2, "chroma": 0.6},
    "vivid": {"dL": 0, "chroma": 1.3},
}
# "-ish" words and the name whose colour they lean to
TINTS = {
    "reddish": "red", "orangish": "orange", "orangey": "orange", "yellowish": "yellow", "greenish": "green",
    "bluish": "blue", "blueish": "blue", "purplish": "purple", "pinkish": "pink", "brownish": "brown",
    "greyish": "grey", "grayish": "grey", "blackish": "black", "whitish": "white", "violetish": "violet",
}  # fmt: skip


def build() -> dict:
    vocab = load_vocab()
    names = {**vocab.train, **vocab.held_out}
    values = {n: [round(float(v), 2) for v in lab(rgb)] for n, rgb in sorted(names.items())}
    return {
        "source": "training/colour_vocab.json (XKCD colour survey names, CC0; CSS colour names), CIELAB D65",
        "names": values,
        "modifiers": MODIFIERS,
        "tints": {t: values[base] for t, base in TINTS.items()},
    }


def main() -> None:
    data = build()
    OUT.write_text(json.dumps(data, indent=0, ensure_ascii=False) + "\n")
    print(f"{OUT}: {len(data['names'])} names, {len(data['modifiers'])} modifiers, {len(data['tints'])} tints, "
          f"{OUT.stat().st_size / 1e3:.0f} kB")  # fmt: skip


if __name__ == "__main__":
    main()
