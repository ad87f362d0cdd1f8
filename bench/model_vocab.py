"""The embedded model on colour names, phrasings and stroke styles it was never trained on (issue 17).

    python bench/model_vocab.py [--model FOLDER] [--n 100] [--sets names,templates,strokes,issue] [--steps 20]

Sets (training/vocab_world.py; each seeded apart from any training seed):
- names:     held-out colour names (training/colour_vocab.json), training templates and strokes. Figures: CIEDE2000
             between the named colour and the output's dominant colour in each sketched shape and in the
             background, the share within ΔE 20, the median ΔE.
- templates: the ten basic names in held-out templates ("X shape, Y backdrop", "a shape coloured X against Y").
- strokes:   the ten basic names, scribbled in the held-out "sketchy" stroke style.
- issue:     the issue's own synonyms (crimson, scarlet, navy, emerald, golden, violet, lime), trained names.
- scenes:    two or three shapes, each its own named colour (any name of the dictionary, held-out ones included),
             trained phrasings. "scenes_all_present": the share of scenes where every shape's colour is nearer
             (CIEDE2000) to its own name's colour than to any other colour the caption names.
Basic-name accuracy: the nearest of the ten palette colours is the named one. Shape IoU: each output pixel is
"shape" or "ground" by which of the output's own shape / ground colours it is nearer to (CIEDE2000), against the
filled sketched shapes: it scores where the picture follows the sketch, whatever the colours.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from training.colour_vocab import ALWAYS_TRAIN, delta_e, lab  # noqa: E402
from training.vocab_world import VocabSample, vocab_scene  # noqa: E402
from training.world import PALETTE, nearest_color  # noqa: E402

# training seeds are < 1000
SEEDS = {"names": 880_001, "templates": 880_002, "strokes": 880_003, "issue": 880_004, "scenes": 880_005}
ISSUE_WORDS = ("crimson", "scarlet", "navy", "emerald", "golden", "violet", "lime")


@dataclass
class Scores:
    delta_e: list[float] = field(default_factory=list)  # every region of every case
    basic: list[bool] = field(default_factory=list)  # regions named with a basic palette name
    iou: list[float] = field(default_factory=list)  # per case
    all_present: list[bool] = field(default_factory=list)  # per multi-shape case

    def summary(self) -> dict[str, float | int]:
        de = np.array(self.delta_e)
        out: dict[str, float | int] = {"regions": len(de), "cases": len(self.iou)}
        if len(de):
            out |= {"within_20": float((de <= 20).mean()), "median_delta_e": float(np.median(de))}
        if self.basic:
            out |= {"basic_accuracy": float(np.mean(self.basic)), "basic_regions": len(self.basic)}
        if self.iou:
            out["shape_iou"] = float(np.mean(self.iou))
        if self.all_present:
            out["scenes_all_present"] = float(np.mean(self.all_present))
        return out


def regions(sample: VocabSample) -> list[tuple[str, np.ndarray]]:
    """(colour name, mask) of each shape (eroded, so edges do not count) and of the background away from them."""
    k = np.ones((5, 5), np.uint8)
    out = [(o.color, cv2.erode(o.mask.astype(np.uint8), k) > 0) for o in sample.objects]
    occupied = np.zeros(sample.image.shape[:2], np.uint8)
    for o in sample.objects:
        occupied |= o.mask.astype(np.uint8)
    out.append((sample.background or "", cv2.dilate(occupied, np.ones((9, 9), np.uint8)) == 0))
    return [(n, m) for n, m in out if m.sum() >= 12]


def shape_iou(output: np.ndarray, sample: VocabSample) -> float:
    """IoU of the output's shape-coloured pixels with the filled sketched shapes (colours: the output's own)."""
    regs = regions(sample)
    if len(regs) < 2:
        return float("nan")
    colours = np.array([np.median(output[m], axis=0) for _, m in regs], np.float64)  # shapes..., ground last
    pix = lab(output.reshape(-1, 3).astype(np.float64))
    dist = np.stack([np.linalg.norm(pix - lab(c), axis=1) for c in colours], 1)
    pred = (dist.argmin(1) < len(colours) - 1).reshape(output.shape[:2])
    truth = np.zeros_like(pred)
    for o in sample.objects:
        truth |= o.mask
    return float((pred & truth).sum() / max(1, (pred | truth).sum()))


def score(output: np.ndarray, sample: VocabSample, scores: Scores) -> None:
    for name, mask in regions(sample):
        got = np.median(output[mask], axis=0)
        scores.delta_e.append(float(delta_e(got, sample.rgb[name])))
        if name in PALETTE:
            scores.basic.append(nearest_color(got) == name)
    if len(sample.objects) > 1:  # each shape nearer its own colour than any other the caption names
        named = {n: lab(np.array(rgb, np.float64)) for n, rgb in sample.rgb.items()}
        ok = []
        for name, mask in regions(sample)[:-1]:
            got = lab(np.median(output[mask], axis=0).astype(np.float64))
            ok.append(min(named, key=lambda n: float(np.linalg.norm(got - named[n]))) == name)
        scores.all_present.append(bool(ok) and all(ok))
    iou = shape_iou(output, sample)
    if np.isfinite(iou):
        scores.iou.append(iou)


def make_case(which: str, rng: np.random.Generator) -> VocabSample:
    if which == "names":  # every colour a held-out name (no basic ones), trained phrasing and strokes
        while True:
            s = vocab_scene(rng, names="held_out")
            if all(n not in PALETTE for n in s.rgb):
                return s
    if which == "templates":
        return vocab_scene(rng, templates="held_out", basic_only=True)
    if which == "strokes":
        return vocab_scene(rng, strokes="held_out", basic_only=True)
    if which == "issue":  # the issue's words are rare among 772 names, so they are picked directly
        return _issue_case(rng)
    if which == "scenes":
        return vocab_scene(rng, names=str(rng.choice(["train", "held_out"])), n_shapes=int(rng.integers(2, 4)))
    raise ValueError(which)


def _issue_case(rng: np.random.Generator) -> VocabSample:
    assert set(ISSUE_WORDS) <= set(ALWAYS_TRAIN)
    while True:
        s = vocab_scene(rng, n_shapes=int(rng.integers(1, 3)))
        fg, bg = [str(w) for w in rng.choice(ISSUE_WORDS, 2, replace=False)]
        if delta_e(_rgb(fg), _rgb(bg)) < 25:
            continue
        return _recolour(s, fg, bg)


def _rgb(name: str) -> tuple[int, int, int]:
    from training.colour_vocab import load_vocab

    return load_vocab().rgb(name)


def _recolour(s: VocabSample, fg: str, bg: str) -> VocabSample:
    """The same scene and sketch, background `bg` and every shape `fg`, captioned simply."""
    img = np.empty_like(s.image)
    img[:] = _rgb(bg)
    for o in s.objects:
        img[o.mask] = _rgb(fg)
        o.color = fg
    words = " and ".join(f"a {fg} {o.kind}" for o in s.objects)
    return VocabSample(image=img, caption=f"{words} on a {bg} background", scribble=s.scribble, depth=s.depth,
                       pose=s.pose, background=bg, objects=s.objects, rgb={fg: _rgb(fg), bg: _rgb(bg)})  # fmt: skip


def run_set(gen, which: str, n: int, guidance: float, sheet: list | None = None) -> dict[str, float | int]:
    """One set's figures: n cases through `gen` (bench/model_quality.py's Generator) with the scribble ControlNet."""
    rng, scores, t0 = np.random.default_rng(SEEDS[which]), Scores(), time.perf_counter()
    for i in range(n):
        s = make_case(which, rng)
        out = gen(s, "scribble", guidance, seed=i)
        score(out, s, scores)
        if sheet is not None and i < 3:
            sheet.append(np.concatenate([s.scribble, out, s.image], axis=1))
    return scores.summary() | {"seconds": round(time.perf_counter() - t0)}


def main() -> None:
    from bench.model_quality import Generator, sampling_args

    ap = argparse.ArgumentParser()
    sampling_args(ap)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--n-issue", type=int, default=30)
    ap.add_argument("--sets", default="names,templates,strokes,issue,scenes")
    ap.add_argument("--json", help="write the figures here too")
    ap.add_argument("--save", help="a contact sheet of each set's first cases (scribble, output, truth)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: as the model card's speed figure, and "
                    "robust on shared cores, where 2 threads stall on each other)")  # fmt: skip
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    gen = Generator(args.model, args.steps, args.scheduler, args.lora)
    results, sheet = {}, []
    for which in args.sets.split(","):
        results[which] = run_set(gen, which, args.n_issue if which == "issue" else args.n, args.guidance, sheet)
        print(f"{which}: {json.dumps(results[which])}", flush=True)
    if args.json:
        how = {"model": args.model or "embedded", "steps": args.steps, "scheduler": args.scheduler, "guidance": args.guidance}
        Path(args.json).write_text(json.dumps({**how, "lora": args.lora, **results}, indent=1))
    if args.save and sheet:
        from PIL import Image

        Image.fromarray(np.concatenate(sheet, axis=0)).save(args.save)


if __name__ == "__main__":
    main()
