"""bench/corner_blob.py's figure: a blob near a corner raises it, and the same error spread evenly does not."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from corner_blob import corner_ratio  # noqa: E402


def test_a_blob_near_a_corner_is_found_where_it_is_and_flat_error_scores_one():
    flat = torch.full((128, 128), 4.0)
    assert abs(corner_ratio(flat)[0] - 1.0) < 1e-6
    blob = flat.clone()
    blob[114:123, 111:120] = 20.0  # 9x9, centred at (118, 115): where the shipped decoder's blob was
    ratio, where = corner_ratio(blob)
    assert where == (118, 115) and ratio > 4
    middle = flat.clone()
    middle[60:69, 60:69] = 20.0  # the same blob in the middle is not a corner's
    assert corner_ratio(middle)[0] < 1.5
