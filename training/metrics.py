"""Quality measures of the embedded model on world samples (used by bench/model_quality.py and tests)."""

from __future__ import annotations

import cv2
import numpy as np
from skimage.morphology import skeletonize

from noisebrush.engine.pose import LIMBS, Person
from training.world import PALETTE, RELATIONS, SHAPES, Sample, WorldObject, nearest_color

BODY_LIMBS = LIMBS[:12]  # shoulders, arms, torso-to-hips and legs; the face limbs are too small to score


def edges(image: np.ndarray) -> np.ndarray:
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return cv2.Canny(cv2.GaussianBlur(gray, (3, 3), 0), 40, 100) > 0


def fscore(pred: np.ndarray, ref: np.ndarray, tol: int = 2) -> float:
    """F-score of two boolean edge maps, a pixel matching within `tol` pixels."""
    if not pred.any() or not ref.any():
        return 0.0
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * tol + 1, 2 * tol + 1))
    near_ref = cv2.dilate(ref.astype(np.uint8), k) > 0
    near_pred = cv2.dilate(pred.astype(np.uint8), k) > 0
    precision = (pred & near_ref).sum() / pred.sum()
    recall = (ref & near_pred).sum() / ref.sum()
    return 0.0 if precision + recall == 0 else float(2 * precision * recall / (precision + recall))


def scribble_fscore(output: np.ndarray, scribble: np.ndarray, tol: int = 2) -> float:
    """Canny edges of the output against the scribble's centre lines."""
    ref = skeletonize(scribble[..., 0] > 127)
    return fscore(edges(output), ref, tol)


def depth_fscore(output: np.ndarray, depth: np.ndarray, tol: int = 2) -> float:
    """Boundaries of the output against the depth map's discontinuities."""
    d = depth[..., 0]
    ref = cv2.Canny(d, 10, 30) > 0
    return fscore(edges(output), ref, tol)


def dominant_color(output: np.ndarray, mask: np.ndarray, erode: int = 2) -> str | None:
    k = np.ones((2 * erode + 1, 2 * erode + 1), np.uint8)
    inner = cv2.erode(mask.astype(np.uint8), k) > 0
    if inner.sum() < 12:
        return None
    return nearest_color(np.median(output[inner], axis=0))


def caption_colors(sample: Sample) -> list[tuple[WorldObject, set[str]]]:
    """Each shape with the colours its caption allows it.

    A caption like "a pink triangle and a yellow triangle" does not say which triangle is
    which, so either colour is faithful to it; a relation ("... above ...") pins them.
    """
    shapes = [o for o in sample.objects if o.kind in SHAPES]
    pinned = any(f" {r} " in sample.caption for r in RELATIONS)
    return [(o, {o.color} if pinned else {p.color for p in shapes if p.kind == o.kind}) for o in shapes]


def color_checks(output: np.ndarray, sample: Sample, strict: bool = False) -> list[bool]:
    """One check per shape and one for a plain background: is the dominant colour one the caption gives it?

    strict: the colour the world painted, even where the caption leaves it open.
    """
    checks = []
    for o, allowed in caption_colors(sample):
        got = dominant_color(output, o.mask)
        if got is not None:
            checks.append(got == o.color if strict else got in allowed)
    if sample.background is not None and "gradient" not in sample.caption:
        occupied = np.zeros(output.shape[:2], bool)
        for o in sample.objects:
            occupied |= o.mask
        k = np.ones((9, 9), np.uint8)
        bg = ~(cv2.dilate(occupied.astype(np.uint8), k) > 0)
        got = dominant_color(output, bg, erode=0)
        if got is not None:
            checks.append(got == sample.background)
    return checks


def limb_coverage(output: np.ndarray, people: list[Person], background_rgb: np.ndarray, thresh: float = 60.0) -> list[bool]:
    """Per body limb: do most points along it differ clearly from the background (figure pixels)?"""
    out = output.astype(np.float32)
    diff = np.linalg.norm(out - background_rgb[None, None, :], axis=2) > thresh
    h, w = diff.shape
    covered = []
    for person in people:
        for a, b in BODY_LIMBS:
            pa, pb = person.keypoints[a], person.keypoints[b]
            if pa is None or pb is None:
                continue
            ts = np.linspace(0.15, 0.85, 9)
            xs = np.clip(np.round(pa[0] + (pb[0] - pa[0]) * ts).astype(int), 0, w - 1)
            ys = np.clip(np.round(pa[1] + (pb[1] - pa[1]) * ts).astype(int), 0, h - 1)
            covered.append(bool(diff[ys, xs].mean() >= 0.5))
    return covered


def output_background(output: np.ndarray, sample: Sample) -> np.ndarray:
    """The output's own background colour: the median away from every object of the sample."""
    occupied = np.zeros(output.shape[:2], np.uint8)
    for o in sample.objects:
        occupied |= o.mask.astype(np.uint8)
    free = cv2.dilate(occupied, np.ones((9, 9), np.uint8)) == 0
    if free.sum() < 20:
        return np.array(PALETTE.get(sample.background or "white"), np.float32)
    return np.median(output[free].astype(np.float32), axis=0)
