"""Shapes scenes with any colour name, many phrasings and many stroke styles (issue 17).

The old generator (training/world.py) stays as it was: its ten colour names, six templates and one stroke style
are what the shipped model's bench and tests expect. Here every part comes in a "train" and a "held_out" set, so
the bench (bench/model_vocab.py) can score phrasings, colour names and stroke styles never seen in training:

- colour names: training/colour_vocab.json (772 training names, 188 held out);
- phrasings: HELD_OUT_TEMPLATES use words no training caption has ("backdrop", "coloured", "behind", "wall");
  the "grammar" sets (issue 30) give hundreds of sentence shapes, with whole productions held out;
- strokes: the "sketchy" style (each edge its own straight stroke, overshooting the corners) is held out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from training.colour_vocab import delta_e, load_vocab
from training.world import (
    PALETTE,
    SHAPE_WORDS,
    SHAPES,
    Sample,
    WorldObject,
    _depth_rgb,
    _fill,
    _place,
    _shape_polygon,
    hand_drawn,
)

# Object phrases: {c} colour name, {s} shape word. The spans of both are kept for the grounding loss.
OBJECT_FORMS = {"train": ("a {c} {s}", "a {c} {s}", "the {c} {s}", "one {c} {s}", "a {s} in {c}", "a {s} painted {c}"),
                "held_out": ("a {s} coloured {c}",)}  # fmt: skip
# Scene templates: {objs} the joined object phrases, {bg} the background's colour name.
TEMPLATES = {
    "train": (
        "{objs} on a {bg} background", "{objs}, {bg} background", "a {bg} background with {objs}",
        "{objs} against {bg}", "{bg} background, {objs}", "drawing of {objs} on {bg}", "{objs} on plain {bg}",
        "on a {bg} background: {objs}", "a picture with a {bg} background and {objs}", "{objs} on {bg}",
        "sketch of {objs}, the background {bg}", "{bg} all around {objs}", "{objs} over {bg}", "{objs}. background: {bg}",
    ),
    "held_out": ("{objs}, {bg} backdrop", "a {bg} backdrop behind {objs}", "{objs} against a {bg} backdrop",
                 "there is {objs} in front of a {bg} wall"),
}  # fmt: skip
# The issue's own examples pair a held-out template with the held-out object form.


def _grammar() -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """Many more sentence shapes (issue 30), from rules: articles, size words, the colour before or after the
    shape, scene words before or after the objects, six links ("on", "against", "over", "with", …), eight ways to
    name the ground, and no background named at all. Whole productions are held out: the link "upon", grounds
    named "… surface", and objects "that are" a colour never reach training (`grammar_held_out`). None of them
    uses the words of HELD_OUT templates above, so the bench's held-out phrasings stay unseen."""
    sizes = ("", "small ", "big ", "little ", "large ")
    objects = [f"{art} {size}{{c}} {{s}}" for art in ("a", "the", "one") for size in sizes]
    objects += [f"{art} {size}{{s}} {link} {{c}}" for art in ("a", "the") for size in sizes[:3]
                for link in ("in", "painted", "in bright", "of colour")]  # fmt: skip
    held_objects = [f"{art} {{s}} that is {{c}}" for art in ("a", "the")]
    grounds = ("a {bg} background", "{bg}", "a plain {bg} background", "the {bg} background", "a flat {bg} ground",
               "{bg} paper", "a {bg} canvas", "a {bg} field")  # fmt: skip
    links = ("on", "against", "over", "drawn on", "sitting on", "set on")
    scenes = [f"{{objs}} {link} {g}" for link in links for g in grounds]
    scenes += [f"{g} with {{objs}}" for g in grounds] + [f"{g}, {{objs}}" for g in grounds[:4]]
    scenes += [f"{g} under {{objs}}" for g in grounds[:4]] + ["{objs}", "just {objs}", "{objs}, nothing else"]
    held_scenes = [f"{{objs}} upon {g}" for g in grounds[:4]] + ["{objs} on a {bg} surface", "a {bg} surface with {objs}"]
    return {"grammar": (tuple(objects), tuple(scenes)), "grammar_held_out": (tuple(held_objects), tuple(held_scenes))}


for _set, (_objects, _scenes) in _grammar().items():
    OBJECT_FORMS[_set], TEMPLATES[_set] = _objects, _scenes
STROKES = {"train": ("wobble", "clean", "thick", "retraced", "multi", "hatched", "open"), "held_out": ("sketchy",)}
BASIC_SHARE = 0.2  # a fifth of the colours are the ten basic names, so those stay as they were


@dataclass
class VocabSample(Sample):
    """A world Sample whose colours are any vocabulary names; `rgb` maps each name to its colour and `phrases`
    holds, per shape in `objects` order, the caption's (start, end) spans of its colour name and shape word."""

    rgb: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    phrases: list[list[tuple[int, int]]] = field(default_factory=list)


def _line(canvas: np.ndarray, xy: np.ndarray, width: int) -> None:
    if len(xy) > 1:
        cv2.polylines(canvas, [np.round(xy * 4).astype(np.int32)], False, (255, 255, 255), width, cv2.LINE_AA, shift=2)


def _along(pts: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Points at arc lengths `s` (wrapping) along the closed polygon `pts`."""
    loop = np.concatenate([pts, pts[:1]])
    arclen = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(loop, axis=0), axis=1))])
    s = np.mod(s, arclen[-1])
    return np.stack([np.interp(s, arclen, loop[:, 0]), np.interp(s, arclen, loop[:, 1])], 1)


def _perimeter(pts: np.ndarray) -> float:
    return float(np.linalg.norm(np.diff(np.concatenate([pts, pts[:1]]), axis=0), axis=1).sum())


def _jitter(xy: np.ndarray, rng: np.random.Generator, amp: float) -> np.ndarray:
    u = np.linspace(0, 1, len(xy))[:, None]
    f, ph = rng.uniform(1, 4, (1, 2)), rng.uniform(0, 2 * np.pi, (1, 2))
    return xy + amp * np.sin(2 * np.pi * f * u + ph) + rng.normal(0, 0.2, xy.shape)


def draw_strokes(canvas: np.ndarray, poly: np.ndarray, mask: np.ndarray, style: str, rng: np.random.Generator) -> None:
    """Draw one shape's outline (polygon `poly`, filled `mask`) in a stroke style, as a person with a mouse or pen."""
    pts = poly.reshape(-1, 2).astype(np.float64)
    total = _perimeter(pts)
    n = max(16, int(total / 1.5))
    if style == "wobble":  # the old world's style
        hand_drawn(canvas, pts, rng)
    elif style == "clean":
        _line(canvas, _along(pts, np.linspace(0, total, n + 1)), 1)
    elif style == "thick":
        _line(canvas, _jitter(_along(pts, np.linspace(0, total, n + 1)), rng, 0.8), int(rng.integers(4, 6)))
    elif style == "retraced":  # the outline gone over two or three times, never quite on the same line
        for _ in range(int(rng.integers(2, 4))):
            s0 = rng.uniform(0, total)
            s = s0 + np.linspace(0, total * rng.uniform(0.9, 1.08), n)
            _line(canvas, _jitter(_along(pts, s), rng, 1.5), int(rng.integers(1, 3)))
    elif style == "multi":  # several overlapping strokes around the shape
        k = int(rng.integers(2, 5))
        cuts = np.sort(rng.uniform(0, total, k))
        for a, b in zip(cuts, np.roll(cuts, -1) + np.r_[np.zeros(k - 1), total]):
            s = np.linspace(a - rng.uniform(0, 4), b + rng.uniform(0, 5), max(4, int((b - a) / 1.5)))
            _line(canvas, _jitter(_along(pts, s), rng, 0.8), int(rng.integers(1, 4)))
    elif style == "open":  # a closed shape drawn with one large gap
        s0 = rng.uniform(0, total)
        s = s0 + np.linspace(0, total * rng.uniform(0.7, 0.88), n)
        _line(canvas, _jitter(_along(pts, s), rng, 1.0), int(rng.integers(1, 4)))
    elif style == "hatched":  # outline plus parallel hatching inside
        hand_drawn(canvas, pts, rng)
        hatch = np.zeros(canvas.shape[:2], np.uint8)
        ang, gap = rng.uniform(0, np.pi), rng.uniform(4, 8)
        c, s = math.cos(ang), math.sin(ang)
        size = canvas.shape[0]
        for off in np.arange(-size * 1.5, size * 1.5, gap):
            p = np.array([[size / 2 + c * off - s * 2 * size, size / 2 + s * off + c * 2 * size],
                          [size / 2 + c * off + s * 2 * size, size / 2 + s * off - c * 2 * size]])  # fmt: skip
            _line(hatch, p, 1)  # cv2 draws the colour's first channel into a 2-D canvas
        inner = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        canvas[(hatch > 127) & inner] = 255
    elif style == "sketchy":  # held out: each edge its own straight stroke, overshooting the corners
        corners = pts if len(pts) <= 10 else _along(pts, np.linspace(0, total, int(rng.integers(5, 8)), endpoint=False))
        width = int(rng.integers(1, 4))
        for a, b in zip(corners, np.roll(corners, -1, axis=0)):
            d = (b - a) / (np.linalg.norm(b - a) + 1e-6)
            over = rng.uniform(1, 5, 2)
            _line(canvas, _jitter(np.linspace(a - d * over[0], b + d * over[1], 12), rng, 0.5), width)
    else:
        raise ValueError(f"unknown stroke style {style!r}")


def _pick_colour(rng: np.random.Generator, names: list[str], avoid: list[tuple[int, int, int]], rgb) -> str:
    """A name from `names` (a fifth of the time a basic palette name) that stands out from the `avoid` colours."""
    for _ in range(50):
        pool = list(PALETTE) if rng.random() < BASIC_SHARE else names
        name = str(rng.choice(pool))
        if all(delta_e(rgb(name), a) >= 25 for a in avoid):
            return name
    return name


def vocab_scene(rng: np.random.Generator, size: int = 128, names: str = "train", templates: str = "train",
                strokes: str = "train", n_shapes: int | None = None, basic_only: bool = False) -> VocabSample:  # fmt: skip
    """A plain background and one to three shapes, each in a named colour, captioned from a template set and
    scribbled in a stroke style of the given set. `basic_only`: the ten palette names only."""
    vocab = load_vocab()
    pool = list(PALETTE) if basic_only else vocab.names(names)

    def rgb(name: str) -> tuple[int, int, int]:
        return PALETTE.get(name) or vocab.rgb(name)

    bg = _pick_colour(rng, pool, [], rgb)
    img = np.empty((size, size, 3), np.uint8)
    img[:] = rgb(bg)
    depth = np.full((size, size), float(rng.integers(10, 70)), np.float32)
    n = n_shapes or int(rng.choice([1, 1, 2, 2, 3]))
    taken: list[tuple[float, float, float]] = []
    objects: list[WorldObject] = []
    polys = []
    used = [rgb(bg)]
    for _ in range(n):
        r = rng.uniform(0.12, 0.26) * size
        cx, cy = _place(rng, size, r, taken)
        taken.append((cx, cy, r))
        shape = str(rng.choice(SHAPES))
        poly = _shape_polygon(shape, cx, cy, r, rng.uniform(-0.25, 0.25) if shape != "circle" else 0.0)
        name = _pick_colour(rng, pool, used, rgb)
        used.append(rgb(name))
        mask = _fill(size, poly)
        for o in objects:  # later shapes lie in front
            o.mask &= ~mask
        img[mask] = rgb(name)
        d = int(rng.integers(110, 256))
        depth[mask] = d
        objects.append(WorldObject(shape, name, mask, d))
        polys.append(poly)
    # caption, remembering where each shape's colour name and shape word sit
    form_set, tmpl = OBJECT_FORMS[templates], str(rng.choice(TEMPLATES[templates]))
    parts, spans = [], []
    for o in objects:
        form, word = str(rng.choice(form_set)), str(rng.choice(SHAPE_WORDS[o.kind]))
        text = form.format(c=o.color, s=word)
        if text.startswith("a ") and text[2] in "aeiou":
            text = "an " + text[2:]
        parts.append(text)
        c_at = text.index(o.color) if form.index("{c}") < form.index("{s}") else text.rindex(o.color)
        spans.append([(c_at, len(o.color)), (text.index(word), len(word))])
    sep = [", "] * max(0, len(parts) - 2) + [" and "] * (len(parts) > 1)
    objs = parts[0] + "".join(s + p for s, p in zip(sep, parts[1:]))
    head, _, tail = tmpl.partition("{objs}")
    head = head.format(bg=bg)
    caption = head + objs + tail.format(bg=bg)
    phrases, at = [], len(head)
    for text, sp, s in zip(parts, spans, [""] + sep):
        at += len(s)
        phrases.append([(at + i, at + i + length) for i, length in sp])
        at += len(text)
    scribble = np.zeros((size, size, 3), np.uint8)
    for o, poly in zip(objects, polys):
        draw_strokes(scribble, poly, o.mask, str(rng.choice(STROKES[strokes])), rng)
    return VocabSample(image=img, caption=caption, scribble=scribble, depth=_depth_rgb(depth), pose=np.zeros_like(img),
                       background=bg, objects=objects, rgb={k: rgb(k) for k in {bg, *(o.color for o in objects)}},
                       phrases=phrases)  # fmt: skip
