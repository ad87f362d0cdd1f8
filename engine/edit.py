"""Editing requests: widen the canvas (outpainting), and variations of one request."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from noisebrush.engine.errors import UserError
from noisebrush.engine.request import GenerationRequest


def extend(req: GenerationRequest, left: int, top: int, right: int, bottom: int) -> GenerationRequest:
    """The request on a canvas widened by the given px on each side: the old picture is the init image (its edges
    stretched into the new border so colours continue), the new border is the mask, control maps get black there."""
    if req.init_image is None:
        raise UserError("extending needs a picture to extend (an init image)")
    sides = (left, top, right, bottom)
    if any(not isinstance(v, int) or v < 0 or v % 8 for v in sides) or not any(sides):
        raise UserError(f"extend by multiples of 8 px, at least one side (got {left},{top},{right},{bottom})")
    border = dict(top=top, bottom=bottom, left=left, right=right)
    init = cv2.copyMakeBorder(np.asarray(req.init_image), borderType=cv2.BORDER_REPLICATE, **border)
    mask = np.full(init.shape[:2], 255, np.uint8)
    h, w = req.height, req.width
    mask[top : top + h, left : left + w] = 0 if req.mask is None else req.mask
    controls = tuple(
        dataclasses.replace(
            c, image=cv2.copyMakeBorder(np.asarray(c.image), borderType=cv2.BORDER_CONSTANT, value=0, **border)
        )  # fmt: skip
        for c in req.controls
    )
    # a region that reaches an edge goes on into the new border there, as its picture does
    regions = tuple(dataclasses.replace(r, mask=cv2.copyMakeBorder(np.asarray(r.mask), borderType=cv2.BORDER_REPLICATE,
                                                                   **border)) for r in req.regions)  # fmt: skip
    return req.replace(init_image=init, mask=mask, controls=controls, width=w + left + right, height=h + top + bottom,
                       strength=1.0, regions=regions)  # fmt: skip


def variations(req: GenerationRequest, count: int, first_seed: int) -> list[GenerationRequest]:
    """`count` requests with seeds first_seed, first_seed + 1, …: each its own job, previews and result."""
    if not 1 <= count <= 64:
        raise UserError(f"a batch is 1 to 64 pictures (got {count})")
    from noisebrush.engine.request import MAX_SEED

    return [req.replace(seed=(first_seed + i) % (MAX_SEED + 1)) for i in range(count)]
