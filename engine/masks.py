"""Inpainting masks, the same for every backend: a feathered edge, and the kept pixels pasted back exactly."""

from __future__ import annotations

import numpy as np


def feathered(mask: np.ndarray, feather: int) -> np.ndarray:
    """The mask with a soft edge of `feather` px (0: as painted)."""
    if feather <= 0:
        return mask
    import cv2

    k = 2 * feather + 1
    return cv2.GaussianBlur(mask, (k, k), feather / 2)


def paste_back(result: np.ndarray, init: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Outside the mask the original pixels, exactly (a VAE round trip would shift them); a soft mask blends."""
    m = mask.astype(np.float32)[..., None] / 255.0
    blended = (m * result + (1.0 - m) * init).round().astype(np.uint8)
    return np.where(mask[..., None] == 0, init, blended)
