"""OpenPose-18 body skeletons: the data, the standard rendering and the JSON format.

The keypoint order, limb pairs and colours are those of OpenPose's body model as
controlnet-aux draws them, so a map rendered here is what pose ControlNets were
trained on.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from noisebrush.engine.errors import UserError

KEYPOINT_NAMES: tuple[str, ...] = (
    "nose", "neck",
    "right_shoulder", "right_elbow", "right_wrist",
    "left_shoulder", "left_elbow", "left_wrist",
    "right_hip", "right_knee", "right_ankle",
    "left_hip", "left_knee", "left_ankle",
    "right_eye", "left_eye", "right_ear", "left_ear",
)  # fmt: skip
NUM_KEYPOINTS = len(KEYPOINT_NAMES)

# 0-based limb pairs; OpenPose draws the first 17 of its 19 (the ear-shoulder pairs are skipped).
LIMBS: tuple[tuple[int, int], ...] = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
    (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)  # fmt: skip

COLORS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)  # fmt: skip

# Left/right partners, for mirroring a skeleton.
MIRROR_PAIRS: tuple[tuple[int, int], ...] = ((2, 5), (3, 6), (4, 7), (8, 11), (9, 12), (10, 13), (14, 15), (16, 17))

STICK_WIDTH = 4
JOINT_RADIUS = 4

Point = tuple[float, float] | None


class PoseError(UserError, ValueError):
    """A pose file that cannot be read. A ValueError too: callers from before it was a UserError catch that."""


@dataclass
class Person:
    """One skeleton: 18 keypoints in pixels. None: position unknown. Hidden joints keep their
    position (so they can be shown again) but are left out of the map, as OpenPose leaves out unseen ones."""

    keypoints: list[Point] = field(default_factory=lambda: [None] * NUM_KEYPOINTS)
    hidden: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        if len(self.keypoints) != NUM_KEYPOINTS:
            raise ValueError(f"a person has {NUM_KEYPOINTS} keypoints, got {len(self.keypoints)}")
        self.keypoints = [None if p is None else (float(p[0]), float(p[1])) for p in self.keypoints]
        self.hidden = frozenset(self.hidden)

    def copy(self) -> Person:
        return Person(list(self.keypoints), self.hidden)

    def shown(self, i: int) -> Point:
        """The keypoint if it is drawn, else None."""
        return None if i in self.hidden else self.keypoints[i]

    def visible(self) -> list[tuple[int, tuple[float, float]]]:
        return [(i, p) for i, p in enumerate(self.keypoints) if p is not None and i not in self.hidden]

    def with_point(self, i: int, p: tuple[float, float]) -> Person:
        kps = list(self.keypoints)
        kps[i] = p
        return Person(kps, self.hidden)

    def with_hidden(self, i: int, hide: bool) -> Person:
        return Person(list(self.keypoints), self.hidden | {i} if hide else self.hidden - {i})

    def translated(self, dx: float, dy: float) -> Person:
        return Person([None if p is None else (p[0] + dx, p[1] + dy) for p in self.keypoints], self.hidden)

    def center(self) -> tuple[float, float]:
        pts = [p for p in self.keypoints if p is not None]
        if not pts:
            return (0.0, 0.0)
        return (sum(p[0] for p in pts) / len(pts), sum(p[1] for p in pts) / len(pts))

    def scaled(self, factor: float, origin: tuple[float, float] | None = None) -> Person:
        ox, oy = origin if origin is not None else self.center()
        return Person(
            [None if p is None else (ox + (p[0] - ox) * factor, oy + (p[1] - oy) * factor) for p in self.keypoints],
            self.hidden,
        )

    def mirrored(self, axis_x: float | None = None) -> Person:
        """Flip horizontally about axis_x (the person's centre by default) and swap left/right labels."""
        ax = axis_x if axis_x is not None else self.center()[0]
        flipped = [None if p is None else (2 * ax - p[0], p[1]) for p in self.keypoints]
        swap = {i: i for i in range(NUM_KEYPOINTS)}
        for a, b in MIRROR_PAIRS:
            flipped[a], flipped[b] = flipped[b], flipped[a]
            swap[a], swap[b] = b, a
        return Person(flipped, frozenset(swap[i] for i in self.hidden))


def default_person(cx: float, cy: float, height: float) -> Person:
    """A standing figure centred at (cx, cy), `height` pixels tall, facing the viewer."""
    u = height / 8.0
    pts: list[Point] = [
        (cx, cy - 3.4 * u),  # nose
        (cx, cy - 2.6 * u),  # neck
        (cx - 0.9 * u, cy - 2.6 * u), (cx - 1.3 * u, cy - 1.3 * u), (cx - 1.5 * u, cy - 0.1 * u),
        (cx + 0.9 * u, cy - 2.6 * u), (cx + 1.3 * u, cy - 1.3 * u), (cx + 1.5 * u, cy - 0.1 * u),
        (cx - 0.55 * u, cy + 0.2 * u), (cx - 0.6 * u, cy + 1.9 * u), (cx - 0.65 * u, cy + 3.6 * u),
        (cx + 0.55 * u, cy + 0.2 * u), (cx + 0.6 * u, cy + 1.9 * u), (cx + 0.65 * u, cy + 3.6 * u),
        (cx - 0.2 * u, cy - 3.6 * u), (cx + 0.2 * u, cy - 3.6 * u),
        (cx - 0.45 * u, cy - 3.5 * u), (cx + 0.45 * u, cy - 3.5 * u),
    ]  # fmt: skip
    return Person(pts)


def render_pose(people: list[Person], width: int, height: int, canvas: np.ndarray | None = None) -> np.ndarray:
    """Draw skeletons as OpenPose does: limbs as 60 %-dimmed ellipses, then joints as dots. RGB uint8."""
    out = np.zeros((height, width, 3), np.uint8) if canvas is None else canvas
    for person in people:
        kp = [person.shown(i) for i in range(NUM_KEYPOINTS)]
        for (a, b), color in zip(LIMBS, COLORS):
            pa, pb = kp[a], kp[b]
            if pa is None or pb is None:
                continue
            mx, my = (pa[0] + pb[0]) / 2, (pa[1] + pb[1]) / 2
            length = math.hypot(pa[0] - pb[0], pa[1] - pb[1])
            angle = math.degrees(math.atan2(pa[1] - pb[1], pa[0] - pb[0]))
            poly = cv2.ellipse2Poly((int(mx), int(my)), (int(length / 2), STICK_WIDTH), int(angle), 0, 360, 1)
            cv2.fillConvexPoly(out, poly, [int(c * 0.6) for c in color])
        for p, color in zip(kp, COLORS):
            if p is not None:
                cv2.circle(out, (int(p[0]), int(p[1])), JOINT_RADIUS, color, thickness=-1)
    return out


def people_to_json(people: list[Person], width: int, height: int) -> dict:
    """The OpenPose JSON layout (`people[].pose_keypoints_2d` = x, y, confidence × 18) in pixels."""
    result = []
    for person in people:
        flat: list[float] = []
        for i, p in enumerate(person.keypoints):
            if p is None:
                flat.extend([0.0, 0.0, 0.0])
            else:  # hidden joints keep their place with confidence 0, as OpenPose writes unseen ones
                flat.extend([float(p[0]), float(p[1]), 0.0 if i in person.hidden else 1.0])
        result.append({"pose_keypoints_2d": flat})
    return {"canvas_width": width, "canvas_height": height, "people": result}


# OpenPose's own default, BODY_25 → the COCO-18 that ControlNets draw: by index (mid-hip and feet have no place)
BODY25_TO_COCO18 = (0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18)
MAX_COORD = 100_000.0  # px; beyond this a file is not a pose


def _number(v: object) -> float:
    try:
        finite = not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)
    except OverflowError:  # an int past a float's range (JSON allows 10**400)
        finite = False
    if not finite:
        raise PoseError(f"a pose keypoint holds {v!r:.40}, not a finite number")
    return float(v)


def _canvas(data: dict, key: str) -> int | None:
    v = data.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 1 <= v <= MAX_COORD:
        raise PoseError(f"{key} must be a size in pixels (got {v!r:.40})")
    return int(v)


def people_from_json(data: dict, width: int | None = None, height: int | None = None,
                     notes: list[str] | None = None) -> tuple[list[Person], int, int]:  # fmt: skip
    """Parse OpenPose JSON (COCO-18 as editors write it, or BODY_25 as OpenPose does). Returns the people scaled to
    (width, height) when given, and the size used.

    Coordinates ≤ 1 everywhere are taken as normalised, as some editors write them. A file with pixel coordinates
    and no canvas size has its people fitted to the canvas, and `notes` says so.
    """
    if not isinstance(data, dict) or not isinstance(data.get("people"), list):
        raise PoseError("not an OpenPose JSON file: it has no 'people' list")
    notes = notes if notes is not None else []
    src_w, src_h = _canvas(data, "canvas_width"), _canvas(data, "canvas_height")
    raw = []
    for entry in data["people"]:
        flat = entry.get("pose_keypoints_2d") if isinstance(entry, dict) else None
        if not isinstance(flat, list) or len(flat) < NUM_KEYPOINTS * 3:
            raise PoseError("a person's pose_keypoints_2d must hold 18 (COCO) or 25 (BODY_25) × (x, y, confidence)")
        values = [_number(v) for v in flat]
        if len(values) == 25 * 3:
            values = [values[3 * b + k] for b in BODY25_TO_COCO18 for k in range(3)]
        values = values[: NUM_KEYPOINTS * 3]
        if any(abs(v) > MAX_COORD for v in values):
            raise PoseError("pose coordinates are out of range")
        raw.append(values)
    coords = [v for values in raw for i, v in enumerate(values) if i % 3 != 2]
    normalised = max(coords, default=0.0) <= 1.0
    dst_w, dst_h = width or src_w or 512, height or src_h or 512
    if normalised:
        sx, sy, dx, dy = dst_w, dst_h, 0.0, 0.0
    elif src_w and src_h:
        sx, sy, dx, dy = dst_w / src_w, dst_h / src_h, 0.0, 0.0
    else:  # pixels of an unknown image: fit what was seen into the canvas
        seen = [(values[3 * i], values[3 * i + 1]) for values in raw for i in range(NUM_KEYPOINTS)
                if not (values[3 * i + 2] <= 0 and values[3 * i] == 0 and values[3 * i + 1] == 0)]  # fmt: skip
        xs, ys = [p[0] for p in seen] or [0.0], [p[1] for p in seen] or [0.0]
        span = max(max(xs) - min(xs), max(ys) - min(ys), 1.0)
        sx = sy = 0.8 * min(dst_w, dst_h) / span
        dx = dst_w / 2 - sx * (min(xs) + max(xs)) / 2
        dy = dst_h / 2 - sy * (min(ys) + max(ys)) / 2
        notes.append("the pose file names no canvas size: its people were fitted to the canvas")
    people = []
    for values in raw:
        kps: list[Point] = []
        hidden = set()
        for i in range(NUM_KEYPOINTS):
            x, y, c = values[3 * i : 3 * i + 3]
            if c <= 0 and x == 0 and y == 0:
                kps.append(None)
                continue
            kps.append((x * sx + dx, y * sy + dy))
            if c <= 0:
                hidden.add(i)
        people.append(Person(kps, frozenset(hidden)))
    return people, dst_w, dst_h


def load_pose_json(path: str | Path, width: int | None = None, height: int | None = None,
                   notes: list[str] | None = None) -> list[Person]:  # fmt: skip
    path = Path(path)
    if not path.is_file():  # a FIFO or a device would block the reader for ever
        raise PoseError(f"{path.name}: not a regular file")
    if path.stat().st_size > 16 * 2**20:
        raise PoseError(f"{path.name}: {path.stat().st_size / 2**20:.0f} MB is too large for a pose file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: not UTF-8, not JSON, a 5,000-digit number
        raise PoseError(f"cannot read pose JSON {path.name}: {exc}") from None
    people, _, _ = people_from_json(data, width, height, notes)
    return people
