"""SDXL ControlNet Union (xinsir's ControlNet++, diffusers' ControlNetUnionModel): one network serves several
control layers at once, each told apart by its control type."""

from __future__ import annotations

from typing import Any

from noisebrush.engine.errors import UserError

UNION_CLASS = "ControlNetUnionModel"
# The control types of xinsir/controlnet-union-sdxl-1.0: 0 openpose, 1 depth, 2 hed/pidi/scribble/ted,
# 3 canny/lineart/anime lineart/mlsd, 4 normal, 5 segment (ProMax adds 6 tile, 7 repaint)
UNION_MODE = {"pose": 0, "depth": 1, "scribble": 2, "canny": 3, "lineart": 3, "tile": 6}  # tile: ProMax only


def named_union(ref: str) -> bool:
    """A ControlNet file or folder whose name says it is a Union (its name says no single control kind)."""
    return "union" in ref.replace("\\", "/").rsplit("/", 1)[-1].lower()


def is_union(net: Any) -> bool:
    return type(net).__name__ == UNION_CLASS


def union_kwargs(nets: list[Any], controls: tuple, images: list[Any]) -> dict | None:
    """The pipeline arguments for a Union ControlNet serving these layers, or None when none of the nets is one.

    The Union takes one weight and one start/end range for all its layers: the largest weight and the widest
    range of the layers are used."""
    if not any(is_union(n) for n in nets):
        return None
    if any(n is not nets[0] for n in nets):
        raise UserError("a ControlNet Union serves every control layer at once: point all active layers at the "
                        "same Union ControlNet, or none of them")  # fmt: skip
    missing = [c.kind for c in controls if c.kind not in UNION_MODE]
    if missing:
        raise UserError(f"the ControlNet Union has no control type for {', '.join(missing)}")
    return dict(
        control_image=images,
        control_mode=[UNION_MODE[c.kind] for c in controls],
        controlnet_conditioning_scale=max(c.weight for c in controls),
        control_guidance_start=min(c.start for c in controls),
        control_guidance_end=max(c.end for c in controls),
    )
