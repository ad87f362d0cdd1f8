"""The tile plan of a large picture: where the tiles go, how much each one counts where they overlap, each tile's
request, and the blend. Plain numpy, no torch: the Engine (above the backend protocol) and the upscaler use it.

Blending: each tile's weight rises from 0 to 1 across the middle of its overlap with the tile before it, with a
smoothstep, and falls the same way where the next one takes over, so the weights sum to exactly one everywhere and a
tile counts nothing at its own edge. The picture is continuous across every tile edge whatever the tiles hold, and
the gradient across a transition band is gentle (MultiDiffusion averages latents every step, which needs every tile
in lockstep in one process; tiles blended as pixels can run on several servers at once). `bench/tile_seams.py`
measures the seam figure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from noisebrush.engine.request import MAX_SEED, ControlSpec, GenerationRequest


@dataclass(frozen=True)
class Tile:
    index: int
    x: int
    y: int
    width: int
    height: int
    weight_x: np.ndarray  # float32 (width,): this tile's share along x (the shares of all tiles sum to one)
    weight_y: np.ndarray  # float32 (height,)

    @property
    def box(self) -> tuple[int, int, int, int]:
        return self.x, self.y, self.width, self.height

    def weight(self) -> np.ndarray:
        return np.outer(self.weight_y, self.weight_x)


def _starts(length: int, size: int, overlap: int) -> list[int]:
    """Evenly spread starts of tiles `size` long covering `length`, each overlapping the next by at least `overlap`."""
    if length <= size:
        return [0]
    n = math.ceil((length - overlap) / (size - overlap))
    return [round(i * (length - size) / (n - 1)) for i in range(n)]


def _smooth(t: np.ndarray) -> np.ndarray:
    return t * t * (3 - 2 * t)


def _shares(starts: list[int], size: int, band: int) -> list[np.ndarray]:
    """Each tile's share along one axis: the hand-over from one tile to the next happens in a band of at most
    `band` px centred in their overlap, so no tile hands over twice in the same pixels."""
    shares = [np.ones(size, np.float32) for _ in starts]
    for i in range(1, len(starts)):
        a, b = starts[i], starts[i - 1] + size  # the overlap of tiles i-1 and i, in picture px
        width = max(1, min(band, b - a, starts[i] - starts[i - 1]))
        lo = (a + b - width) // 2
        ramp = _smooth((np.arange(width, dtype=np.float32) + 0.5) / width)
        up = np.zeros(size, np.float32)
        up[lo - a : lo - a + width] = ramp
        up[lo - a + width :] = 1.0
        shares[i] *= up
        down = np.ones(size, np.float32)  # the previous tile: 1 - this one's rise, in its own coordinates
        off = a - starts[i - 1]
        down[off:] = 1.0 - up[: size - off]
        shares[i - 1] *= down
    return shares


def default_overlap(tile: int) -> int:
    """3/8 of a tile: at a quarter the hand-over's steepest point was 1.33× the picture's own gradient on the seam
    bench, at 3/8 0.99 (bench/print_size.py seams), for 44 % more tiles at 512 px."""
    return tile * 3 // 8 // 8 * 8


def plan_tiles(width: int, height: int, tile: int, overlap: int) -> tuple[Tile, ...]:
    """Tiles of tile×tile px (smaller only where the picture is), row by row, overlapping by ≥ `overlap` px."""
    tw, th = min(tile, width), min(tile, height)
    xs, ys = _starts(width, tw, overlap), _starts(height, th, overlap)
    wx, wy = _shares(xs, tw, overlap), _shares(ys, th, overlap)
    tiles = []
    for j, y in enumerate(ys):
        for i, x in enumerate(xs):
            tiles.append(Tile(len(tiles), x, y, tw, th, wx[i], wy[j]))
    return tuple(tiles)


def _crop(image: np.ndarray, t: Tile) -> np.ndarray:
    return image[t.y : t.y + t.height, t.x : t.x + t.width]


def tile_request(full: GenerationRequest, picture: np.ndarray, t: Tile) -> GenerationRequest:
    """The ordinary img2img request for one tile: the crops of the picture, of every control map and region mask;
    the references whole; a seed of its own (one seed for every tile repeats the same noise grain in each)."""
    regions = tuple(replace(r, mask=_crop(r.mask, t)) for r in full.regions if _crop(r.mask, t).any())
    references = tuple(r if r.mask is None else replace(r, mask=_crop(r.mask, t)) for r in full.references)
    seed = None if full.seed is None else (full.seed + t.index) % (MAX_SEED + 1)
    crop = _crop(picture, t)
    controls = tuple(ControlSpec(c.kind, _crop(c.image, t), c.weight, c.start, c.end, c.model) for c in full.controls)
    tiling = full.tiling
    if tiling is not None and tiling.controlnet and tiling.controlnet_weight > 0 and "tile" not in {c.kind for c in controls}:
        controls += (ControlSpec("tile", crop, tiling.controlnet_weight, model=tiling.controlnet),)  # its own source
    return full.replace(tiling=None, width=t.width, height=t.height, init_image=crop, seed=seed, mask=None,
                        controls=controls, regions=regions, references=references)  # fmt: skip


class Blend:
    """The tiles' results summed with their weights, in 8.8 fixed point (6 bytes a pixel instead of 16 for float
    sums: a 4096² picture's blend costs 100 MB). The weights sum to one, so no second pass divides."""

    def __init__(self, width: int, height: int) -> None:
        self._sum = np.zeros((height, width, 3), np.uint16)

    def add(self, t: Tile, image: np.ndarray) -> None:
        w = (t.weight() * 256.0)[..., None]
        part = self._sum[t.y : t.y + t.height, t.x : t.x + t.width]
        part[...] = np.minimum(part + np.rint(image[..., :3] * w).astype(np.uint32), 65535)

    def result(self) -> np.ndarray:
        """The picture, once: rounded in place (the sums stay below 65,410, so + 128 cannot overflow), so the only
        new buffer is the result's."""
        self._sum += 128
        self._sum >>= 8
        return self._sum.astype(np.uint8)
