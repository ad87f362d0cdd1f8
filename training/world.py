"""A seeded procedural world: captioned images with scribble, depth and pose control maps.

Every sample also carries the masks and labels the quality bench and tests need
(object colours, the background colour, the skeletons), so held-out cases can be
scored without a detector.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from noisebrush.engine.pose import Person, default_person, render_pose

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 35, 35),
    "orange": (245, 140, 25),
    "yellow": (245, 220, 40),
    "green": (45, 165, 60),
    "blue": (35, 75, 215),
    "purple": (135, 55, 185),
    "pink": (245, 135, 195),
    "brown": (125, 75, 35),
    "black": (25, 25, 25),
    "white": (245, 245, 245),
}
COLOR_NAMES = tuple(PALETTE)
SHAPES = ("circle", "square", "triangle", "star", "diamond")
SHAPE_WORDS = {
    "circle": ("circle", "circle", "disc", "round shape"),
    "square": ("square", "square", "box"),
    "triangle": ("triangle",),
    "star": ("star",),
    "diamond": ("diamond", "rhombus"),
}
SKIN = (235, 190, 150)


@dataclass
class WorldObject:
    kind: str  # a shape name, "person", "sun", "tree", "house", "ground"
    color: str  # palette name of its main colour
    mask: np.ndarray  # HxW bool, visible pixels only
    depth: int


@dataclass
class Sample:
    image: np.ndarray  # HxWx3 uint8 RGB
    caption: str
    scribble: np.ndarray  # HxWx3 uint8, white strokes on black
    depth: np.ndarray  # HxWx3 uint8, grayscale, near = bright
    pose: np.ndarray  # HxWx3 uint8 OpenPose map (black where nobody stands)
    background: str | None  # palette name of a plain/gradient background, None for scenes
    objects: list[WorldObject] = field(default_factory=list)
    people: list[Person] = field(default_factory=list)

    def control(self, kind: str) -> np.ndarray:
        return {"scribble": self.scribble, "depth": self.depth, "pose": self.pose}[kind]


def _shape_polygon(shape: str, cx: float, cy: float, r: float, rot: float) -> np.ndarray:
    if shape == "circle":
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        pts = np.stack([np.cos(t), np.sin(t)], 1)
    elif shape == "square":
        t = np.array([0.25, 0.75, 1.25, 1.75]) * np.pi
        pts = np.stack([np.cos(t), np.sin(t)], 1) * 1.0
    elif shape == "triangle":
        t = np.array([-0.5, 1 / 6, 5 / 6]) * np.pi
        pts = np.stack([np.cos(t), np.sin(t)], 1) * 1.15
        pts[:, 1] += 0.2
    elif shape == "star":
        t = -np.pi / 2 + np.arange(10) * np.pi / 5
        rad = np.where(np.arange(10) % 2 == 0, 1.15, 0.48)
        pts = np.stack([np.cos(t) * rad, np.sin(t) * rad], 1)
    elif shape == "diamond":
        t = np.array([0, 0.5, 1, 1.5]) * np.pi
        pts = np.stack([np.cos(t) * 0.8, np.sin(t) * 1.1], 1)
    else:
        raise ValueError(shape)
    c, s = math.cos(rot), math.sin(rot)
    pts = pts @ np.array([[c, s], [-s, c]])
    return pts * r + np.array([cx, cy])


def _fill(size: int, poly: np.ndarray) -> np.ndarray:
    m = np.zeros((size, size), np.uint8)
    cv2.fillPoly(m, [np.round(poly * 4).astype(np.int32)], 255, cv2.LINE_AA, shift=2)
    return m > 127


def _paint(img: np.ndarray, mask: np.ndarray, color: tuple[int, int, int]) -> None:
    img[mask] = color


def hand_drawn(canvas: np.ndarray, contour: np.ndarray, rng: np.random.Generator, closed: bool = True) -> None:
    """Draw a contour as a person would with a mouse: wobble, varied width, gaps and overshoot."""
    pts = contour.reshape(-1, 2).astype(np.float64)
    if len(pts) < 2:
        return
    if closed:
        pts = np.concatenate([pts, pts[:1]])
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    arclen = np.concatenate([[0], np.cumsum(seg)])
    total = arclen[-1]
    if total < 4:
        return
    clean = rng.random() < 0.12
    n = max(8, int(total / 1.5))
    s = np.linspace(0, total, n)
    if closed and not clean:
        start = rng.uniform(0, total)
        overshoot = rng.uniform(-0.04, 0.12) * total  # negative: the loop is left open
        s = (start + np.linspace(0, total + overshoot, n)) % total
    xy = np.stack([np.interp(s, arclen, pts[:, 0]), np.interp(s, arclen, pts[:, 1])], 1)
    if not clean:
        # Low-frequency wobble, perpendicular-ish: a sum of a few random sinusoids along the stroke.
        u = np.linspace(0, 1, n)
        amp = rng.uniform(0.4, 2.2)
        for axis in range(2):
            for _ in range(3):
                f, ph = rng.uniform(1, 6), rng.uniform(0, 2 * np.pi)
                xy[:, axis] += amp / 2 * np.sin(2 * np.pi * f * u + ph)
        xy += rng.normal(0, 0.25, xy.shape)
    keep = np.ones(n, bool)
    if not clean and rng.random() < 0.5:
        for _ in range(rng.integers(1, 3)):
            g0 = rng.integers(0, n)
            keep[g0 : g0 + int(n * rng.uniform(0.03, 0.1))] = False
    width = 1 if clean else int(rng.choice([1, 1, 2, 2, 3, 4]))
    runs, cur = [], []
    for i in range(n):
        if keep[i]:
            cur.append(xy[i])
        elif cur:
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    for run in runs:
        if len(run) > 1:
            arr = np.round(np.array(run) * 4).astype(np.int32)
            cv2.polylines(canvas, [arr], False, (255, 255, 255), width, cv2.LINE_AA, shift=2)


def scribble_from_masks(masks: list[np.ndarray], size: int, rng: np.random.Generator) -> np.ndarray:
    out = np.zeros((size, size, 3), np.uint8)
    for m in masks:
        contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        for c in contours:
            if cv2.contourArea(c) >= 12:
                hand_drawn(out, c, rng)
    return out


def _background(size: int, rng: np.random.Generator) -> tuple[np.ndarray, str, bool]:
    name = str(rng.choice(COLOR_NAMES))
    base = np.array(PALETTE[name], np.float32)
    img = np.empty((size, size, 3), np.float32)
    gradient = rng.random() < 0.35
    if gradient:
        other = np.clip(base * rng.uniform(0.65, 0.85) + (255 - base) * rng.uniform(0.0, 0.35), 0, 255)
        t = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]
        if rng.random() < 0.5:
            t = t.transpose(1, 0, 2)
        img[:] = base * (1 - t) + other * t
    else:
        img[:] = base
    return img.astype(np.uint8), name, gradient


def random_pose(rng: np.random.Generator, cx: float, cy: float, height: float) -> Person:
    """A plausible standing/walking/waving pose built by forward kinematics from a default figure."""
    base = default_person(cx, cy, height)
    kp = list(base.keypoints)
    u = height / 8.0

    def limb(root: int, a1: float, l1: float, a2: float, l2: float, mid: int, end: int) -> None:
        x0, y0 = kp[root]
        x1, y1 = x0 + math.cos(a1) * l1, y0 + math.sin(a1) * l1
        x2, y2 = x1 + math.cos(a2) * l2, y1 + math.sin(a2) * l2
        kp[mid], kp[end] = (x1, y1), (x2, y2)

    down = math.pi / 2
    # right arm hangs on the image's left side (the figure faces us)
    ra = down + rng.uniform(-0.2, 1.9) * 1.0 + 0.15
    la = down - rng.uniform(-0.2, 1.9) - 0.15
    limb(2, ra, 1.35 * u, ra + rng.uniform(-0.9, 0.9), 1.25 * u, 3, 4)
    limb(5, la, 1.35 * u, la + rng.uniform(-0.9, 0.9), 1.25 * u, 6, 7)
    rl = down + rng.uniform(0.0, 0.45)
    ll = down - rng.uniform(0.0, 0.45)
    limb(8, rl, 1.7 * u, rl + rng.uniform(-0.3, 0.3), 1.7 * u, 9, 10)
    limb(11, ll, 1.7 * u, ll + rng.uniform(-0.3, 0.3), 1.7 * u, 12, 13)
    person = Person(kp)
    if rng.random() < 0.3:
        # a slight lean of the whole body
        ang = rng.uniform(-0.15, 0.15)
        ox, oy = cx, cy + 3.6 * u
        c, s = math.cos(ang), math.sin(ang)
        person = Person([None if p is None else (ox + (p[0] - ox) * c - (p[1] - oy) * s,
                                                 oy + (p[0] - ox) * s + (p[1] - oy) * c) for p in person.keypoints])  # fmt: skip
    return person


def draw_figure(img: np.ndarray, person: Person, shirt: str, trousers: str) -> np.ndarray:
    """Paint a cartoon figure whose limbs follow the skeleton. Returns its mask."""
    size = img.shape[0]
    kp = person.keypoints
    u = max(2.0, math.dist(kp[1], kp[8]) / 2.8) if kp[1] and kp[8] else 4.0
    layer = np.zeros((size, size), np.uint8)
    colors: list[tuple[np.ndarray, tuple[int, int, int]]] = []

    def line(a: int, b: int, width: float) -> np.ndarray:
        m = np.zeros((size, size), np.uint8)
        if kp[a] is not None and kp[b] is not None:
            p1 = tuple(int(round(v * 4)) for v in kp[a])
            p2 = tuple(int(round(v * 4)) for v in kp[b])
            cv2.line(m, p1, p2, 255, max(1, int(width)), cv2.LINE_AA, shift=2)
        return m > 127

    trouser_c, shirt_c = PALETTE[trousers], PALETTE[shirt]
    legs = line(8, 9, 0.9 * u) | line(9, 10, 0.8 * u) | line(11, 12, 0.9 * u) | line(12, 13, 0.8 * u)
    hips = np.zeros((size, size), np.uint8)
    torso_poly = np.array([kp[2], kp[5], kp[11], kp[8]], np.float64)
    cv2.fillPoly(hips, [np.round(torso_poly * 4).astype(np.int32)], 255, cv2.LINE_AA, shift=2)
    torso = hips > 127
    arms = line(2, 3, 0.7 * u) | line(3, 4, 0.6 * u) | line(5, 6, 0.7 * u) | line(6, 7, 0.6 * u)
    head = np.zeros((size, size), np.uint8)
    cv2.circle(head, tuple(int(round(v * 4)) for v in kp[0]), int(round(0.75 * u * 4)), 255, -1, cv2.LINE_AA, shift=2)
    neck = line(1, 0, 0.4 * u)
    colors = [(legs, trouser_c), (torso | arms, shirt_c), (neck, SKIN), (head > 127, SKIN)]
    for m, c in colors:
        img[m] = c
        layer[m] = 255
    return layer > 0


def _describe(obj: tuple[str, str], rng: np.random.Generator) -> str:
    color, shape = obj
    word = str(rng.choice(SHAPE_WORDS[shape]))
    return f"{_article(color)} {color} {word}"


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


# Spatial relations captions use between two shapes ("a red star above a blue box").
RELATIONS = ("to the left of", "to the right of", "above", "below")


def _relation(a: tuple[float, float], b: tuple[float, float]) -> str:
    dx, dy = b[0] - a[0], b[1] - a[1]
    if abs(dx) >= abs(dy):
        return RELATIONS[0] if dx > 0 else RELATIONS[1]
    return RELATIONS[2] if dy > 0 else RELATIONS[3]


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _place(rng: np.random.Generator, size: int, r: float, taken: list[tuple[float, float, float]]) -> tuple[float, float]:
    for _ in range(30):
        cx, cy = rng.uniform(r + 2, size - r - 2), rng.uniform(r + 2, size - r - 2)
        if all(math.hypot(cx - x, cy - y) > 0.75 * (r + rr) for x, y, rr in taken):
            return cx, cy
    return cx, cy


def _shapes_scene(rng: np.random.Generator, size: int, with_person: bool) -> Sample:
    img, bg_name, gradient = _background(size, rng)
    bg_depth = int(rng.integers(10, 70))
    depth = np.full((size, size), bg_depth, np.float32)
    n = int(rng.choice([1, 1, 2, 2, 2, 3])) if not with_person else int(rng.choice([0, 1, 1]))
    taken: list[tuple[float, float, float]] = []
    objs: list[tuple[str, str, np.ndarray, int, tuple[float, float]]] = []
    people: list[Person] = []
    figure_desc = ""
    if with_person:
        h = rng.uniform(0.55, 0.85) * size
        cx = rng.uniform(0.3, 0.7) * size
        cy = size / 2 + rng.uniform(-0.05, 0.05) * size
        person = random_pose(rng, cx, cy, h)
        people.append(person)
        taken.append((cx, cy, h / 2.5))
    for _ in range(n):
        r = rng.uniform(0.1, 0.24) * size
        cx, cy = _place(rng, size, r, taken)
        taken.append((cx, cy, r))
        color = str(rng.choice([c for c in COLOR_NAMES if c != bg_name]))
        shape = str(rng.choice(SHAPES))
        poly = _shape_polygon(shape, cx, cy, r, rng.uniform(-0.25, 0.25) if shape != "circle" else 0.0)
        objs.append((shape, color, _fill(size, poly), int(rng.integers(110, 256)), (cx, cy)))
    # paint far to near so nearer objects occlude
    objects: list[WorldObject] = []
    order = sorted(range(len(objs)), key=lambda i: objs[i][3])
    visible = [m.copy() for _, _, m, _, _ in objs]
    for i in order:
        shape, color, m, d, (cx, cy) = objs[i]
        _paint(img, m, PALETTE[color])
        if shape == "circle":
            yy, xx = np.mgrid[0:size, 0:size]
            r = math.sqrt(m.sum() / math.pi) + 1e-6
            bump = np.sqrt(np.clip(1 - ((xx - cx) ** 2 + (yy - cy) ** 2) / r**2, 0, 1))
            depth[m] = d - 40 + 40 * bump[m]
        else:
            depth[m] = d
        for j in range(len(objs)):
            if j != i and objs[j][3] < d:  # j lies behind i
                visible[j] &= ~m
    for i, (shape, color, _m, d, _c) in enumerate(objs):
        objects.append(WorldObject(shape, color, visible[i], d))
    if with_person:
        shirt = str(rng.choice([c for c in COLOR_NAMES if c != bg_name]))
        trousers = str(rng.choice([c for c in COLOR_NAMES if c != bg_name]))
        fmask = draw_figure(img, people[0], shirt, trousers)
        depth[fmask] = 235
        for o in objects:
            o.mask &= ~fmask
        objects.append(WorldObject("person", shirt, fmask, 235))
        figure_desc = str(rng.choice([
            f"a person in a {shirt} shirt and {trousers} trousers",
            f"a figure wearing a {shirt} shirt and {trousers} pants",
            f"a cartoon person with a {shirt} top and {trousers} trousers",
        ]))  # fmt: skip
    # caption
    shape_objs = [(c, s) for s, c, _, _, _ in objs]
    descs = [_describe(o, rng) for o in shape_objs]
    bg = f"{bg_name} gradient background" if gradient and rng.random() < 0.6 else f"{bg_name} background"
    things = ([figure_desc] if figure_desc else []) + descs
    if len(objs) == 2 and not figure_desc and rng.random() < 0.5:
        rel = _relation(objs[0][4], objs[1][4])
        body = f"{descs[0]} {rel} {descs[1]}"
    else:
        body = _join(things)
    template = int(rng.integers(0, 6))
    a_bg = f"{_article(bg)} {bg}"
    caption = [
        f"{body} on {a_bg}",
        f"{body}, {bg}",
        f"{a_bg} with {body}",
        f"drawing of {body} on {a_bg}",
        f"simple illustration: {body} on {a_bg}",
        f"{body} against {a_bg}",
    ][template]
    scribble = scribble_from_masks([o.mask for o in objects], size, rng)
    return Sample(
        image=img,
        caption=caption,
        scribble=scribble,
        depth=_depth_rgb(depth),
        pose=render_pose(people, size, size),
        background=bg_name,
        objects=objects,
        people=people,
    )


def _landscape(rng: np.random.Generator, size: int, with_person: bool) -> Sample:
    img = np.zeros((size, size, 3), np.uint8)
    horizon = int(rng.uniform(0.45, 0.7) * size)
    yy = np.arange(size, dtype=np.float32)[:, None]
    sky_top, sky_bottom = np.array([60, 120, 225], np.float32), np.array([150, 200, 245], np.float32)
    t = np.clip(yy / max(horizon, 1), 0, 1)[..., None]
    img[:] = (sky_top * (1 - t) + sky_bottom * t).astype(np.uint8)
    ground_name = str(rng.choice(["green", "brown", "yellow"]))
    ground = np.zeros((size, size), bool)
    ground[horizon:] = True
    img[ground] = PALETTE[ground_name]
    depth = np.zeros((size, size), np.float32)
    depth[horizon:] = np.linspace(60, 150, size - horizon)[:, None]
    objects: list[WorldObject] = [WorldObject("ground", ground_name, ground.copy(), 100)]
    parts: list[str] = []
    if rng.random() < 0.7:
        r = rng.uniform(0.06, 0.11) * size
        c = (rng.uniform(r, size - r), rng.uniform(r, max(r + 1, horizon - r)))
        m = _fill(size, _shape_polygon("circle", c[0], c[1], r, 0))
        img[m] = PALETTE["yellow"]
        depth[m] = 10
        objects.append(WorldObject("sun", "yellow", m, 10))
        parts.append(str(rng.choice(["a yellow sun", "the sun", "a bright sun"])))
    slots = sorted(rng.choice(np.linspace(0.15, 0.85, 5), size=int(rng.integers(1, 3)), replace=False))
    if with_person:
        slots = slots[:1]
    for sx in slots:
        cx = sx * size
        if rng.random() < 0.5:
            trunk_h = rng.uniform(0.12, 0.2) * size
            crown_r = rng.uniform(0.08, 0.14) * size
            trunk = np.zeros((size, size), bool)
            x0 = int(cx - 0.03 * size)
            trunk[int(horizon - trunk_h) : horizon + 4, x0 : x0 + max(3, int(0.06 * size))] = True
            crown = _fill(size, _shape_polygon("circle", cx, horizon - trunk_h - crown_r * 0.6, crown_r, 0))
            img[trunk] = PALETTE["brown"]
            img[crown] = PALETTE["green"]
            m = trunk | crown
            depth[m] = 170
            objects.append(WorldObject("tree", "green", crown, 170))
            parts.append("a tree")
        else:
            w = rng.uniform(0.18, 0.28) * size
            wall_c = str(rng.choice(["red", "white", "yellow", "orange", "pink", "blue"]))
            roof_c = str(rng.choice([c for c in ["red", "brown", "black", "blue", "purple"] if c != wall_c]))
            body = np.zeros((size, size), bool)
            body[int(horizon - w) : horizon + 2, int(cx - w / 2) : int(cx + w / 2)] = True
            roof = _fill(size, np.array([[cx - w * 0.62, horizon - w], [cx + w * 0.62, horizon - w], [cx, horizon - w * 1.7]]))
            img[body] = PALETTE[wall_c]
            img[roof] = PALETTE[roof_c]
            depth[body | roof] = 180
            objects.append(WorldObject("house", wall_c, body & ~roof, 180))
            parts.append(f"a {wall_c} house with a {roof_c} roof")
    people: list[Person] = []
    if with_person:
        foot = min(horizon + rng.uniform(0.05, 0.2) * size, 0.95 * size)
        h = min(rng.uniform(0.5, 0.75) * size, 0.92 * foot)
        cx = rng.uniform(0.25, 0.75) * size
        person = random_pose(rng, cx, foot - 0.45 * h, h)
        shirt = str(rng.choice([c for c in COLOR_NAMES if c != ground_name]))
        trousers = str(rng.choice([c for c in COLOR_NAMES if c != ground_name]))
        fmask = draw_figure(img, person, shirt, trousers)
        depth[fmask] = 235
        for o in objects:
            o.mask &= ~fmask
        objects.append(WorldObject("person", shirt, fmask, 235))
        people.append(person)
        parts.insert(0, f"a person in a {shirt} shirt and {trousers} trousers")
    ground_word = {"green": "green grass", "brown": "brown earth", "yellow": "yellow sand"}[ground_name]
    caption = f"{_join(parts)} on {ground_word} under a blue sky" if parts else f"{ground_word} under a blue sky"
    if rng.random() < 0.3:
        caption = f"landscape: {caption}"
    scribble = scribble_from_masks([o.mask for o in objects if o.kind != "ground"], size, rng)
    hand_drawn(scribble, np.array([[0, horizon], [size - 1, horizon]], np.float64), rng, closed=False)
    return Sample(img, caption, scribble, _depth_rgb(depth), render_pose(people, size, size), None, objects, people)


def _depth_rgb(depth: np.ndarray) -> np.ndarray:
    d = np.clip(depth, 0, 255).astype(np.uint8)
    d = cv2.GaussianBlur(d, (3, 3), 0)
    return np.repeat(d[..., None], 3, axis=2)


def generate(rng: np.random.Generator, size: int = 128, kind: str | None = None) -> Sample:
    """One sample. kind: "shapes", "figure", "landscape", "landscape_figure", or None to draw one at random."""
    if kind is None:
        kind = str(rng.choice(["shapes", "figure", "landscape", "landscape_figure"], p=[0.55, 0.2, 0.12, 0.13]))
    if kind == "shapes":
        return _shapes_scene(rng, size, with_person=False)
    if kind == "figure":
        return _shapes_scene(rng, size, with_person=True)
    if kind == "landscape":
        return _landscape(rng, size, with_person=False)
    if kind == "landscape_figure":
        return _landscape(rng, size, with_person=True)
    raise ValueError(f"unknown sample kind {kind!r}")


def nearest_color(rgb: np.ndarray) -> str:
    names = list(PALETTE)
    pal = np.array([PALETTE[n] for n in names], np.float32)
    return names[int(np.argmin(((pal - np.asarray(rgb, np.float32)) ** 2).sum(1)))]
