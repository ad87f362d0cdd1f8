"""Control maps from photos: edges, depth and pose, offline first.

Weightless preprocessors (Canny, lineart) always work. Weighted ones look only in the
local Hugging Face cache; if their files are missing they raise MissingWeights at once,
naming the repository, the files and their sizes. Nothing is ever downloaded silently:
`download_weights` is a separate, explicit call with progress and cancel.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from noisebrush.engine.errors import UserError
from noisebrush.engine.pose import NUM_KEYPOINTS, Person
from noisebrush.engine.sources import byte_progress


@dataclass(frozen=True)
class WeightFile:
    repo: str
    filename: str
    size_mb: float


@dataclass(frozen=True)
class Preprocessor:
    name: str  # stable id
    title: str  # for menus
    kind: str  # the control layer it feeds: scribble | depth | pose
    weights: tuple[WeightFile, ...] = ()


DEPTH_ANYTHING_REPO = "depth-anything/Depth-Anything-V2-Small-hf"
OPENPOSE_REPO = "lllyasviel/Annotators"

PREPROCESSORS: dict[str, Preprocessor] = {
    p.name: p
    for p in (
        Preprocessor("canny", "Edges (Canny)", "scribble"),
        Preprocessor("lineart", "Line art (standard)", "scribble"),
        Preprocessor("depth_anything", "Depth (Depth Anything V2 Small)", "depth", (
            WeightFile(DEPTH_ANYTHING_REPO, "config.json", 0.001),
            WeightFile(DEPTH_ANYTHING_REPO, "preprocessor_config.json", 0.001),
            WeightFile(DEPTH_ANYTHING_REPO, "model.safetensors", 99.2),
        )),
        Preprocessor("openpose", "Pose (OpenPose body)", "pose", (WeightFile(OPENPOSE_REPO, "body_pose_model.pth", 209.3),)),
    )
}  # fmt: skip


class MissingWeights(UserError):
    def __init__(self, pre: Preprocessor, missing: list[WeightFile]) -> None:
        total = sum(w.size_mb for w in missing)
        files = ", ".join(f"{w.filename} ({w.size_mb:.0f} MB)" if w.size_mb >= 1 else w.filename for w in missing)
        super().__init__(
            f"{pre.title} needs weights that are not on this computer: {missing[0].repo}: {files}; "
            f"about {total:.0f} MB to download (needs the network)"
        )
        self.preprocessor = pre
        self.missing = missing
        self.total_mb = total


@dataclass
class PreprocessResult:
    image: np.ndarray  # HxWx3 uint8 in the control convention, same size as the input
    people: list[Person] | None = None  # pose detectors: editable skeletons in input pixels


def cached_path(w: WeightFile, cache_dir: str | Path | None = None) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(w.repo, w.filename, cache_dir=cache_dir)
    return found if isinstance(found, str) else None


def missing_weights(pre: Preprocessor, cache_dir: str | Path | None = None) -> list[WeightFile]:
    return [w for w in pre.weights if cached_path(w, cache_dir) is None]


def download_weights(
    pre: Preprocessor,
    progress: Callable[[int, int], None] | None = None,
    cancelled: threading.Event | None = None,
    cache_dir: str | Path | None = None,
    fetch: Callable[..., str] | None = None,
) -> None:
    """Fetch the missing files into the HF cache, reporting (done_bytes, total_bytes). Interrupted downloads resume."""
    from huggingface_hub import hf_hub_download

    fetch = fetch or hf_hub_download
    todo = missing_weights(pre, cache_dir)
    total = int(sum(w.size_mb for w in todo) * 1e6)
    done_before = [0]

    # one progress over all files: bytes of the files before this one plus this file's bytes
    Progress = byte_progress(progress, cancelled, "download cancelled", lambda done, _t: (done_before[0] + done, total))

    for w in todo:
        fetch(w.repo, w.filename, cache_dir=cache_dir, tqdm_class=Progress)
        done_before[0] += int(w.size_mb * 1e6)
    if progress is not None:
        progress(total, total)


# --- the preprocessors ----------------------------------------------------------------------


def canny(image: np.ndarray, low: int = 100, high: int = 200) -> PreprocessResult:
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    e = cv2.Canny(gray, low, high)
    return PreprocessResult(np.repeat(e[..., None], 3, axis=2))


def lineart(image: np.ndarray) -> PreprocessResult:
    from controlnet_aux.lineart_standard import LineartStandardDetector

    h, w = image.shape[:2]
    out = LineartStandardDetector()(image, detect_resolution=max(h, w), output_type="np")
    out = cv2.resize(np.asarray(out), (w, h), interpolation=cv2.INTER_AREA)
    # the detector puts the median line at 127; scribble ControlNets want white strokes
    out = np.clip(out.astype(np.uint16) * 2, 0, 255).astype(np.uint8)
    return PreprocessResult(out if out.ndim == 3 else np.repeat(out[..., None], 3, axis=2))


def _require(pre: Preprocessor, cache_dir) -> dict[str, str]:
    missing = missing_weights(pre, cache_dir)
    if missing:
        raise MissingWeights(pre, missing)
    return {w.filename: cached_path(w, cache_dir) for w in pre.weights}  # type: ignore[misc]


def depth_anything(image: np.ndarray, cache_dir: str | Path | None = None) -> PreprocessResult:
    import torch
    from transformers import AutoImageProcessor, AutoModelForDepthEstimation

    paths = _require(PREPROCESSORS["depth_anything"], cache_dir)
    folder = str(Path(paths["config.json"]).parent)
    try:
        processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
        model = AutoModelForDepthEstimation.from_pretrained(folder, local_files_only=True).eval()
    except Exception as exc:  # a damaged cache entry
        raise UserError(f"cannot load the depth model from {folder}: {str(exc).splitlines()[0]}") from None
    h, w = image.shape[:2]
    with torch.inference_mode():
        pred = model(**processor(images=image, return_tensors="pt")).predicted_depth
    depth = torch.nn.functional.interpolate(pred[:, None], size=(h, w), mode="bicubic", align_corners=False)[0, 0].numpy()
    lo, hi = float(depth.min()), float(depth.max())
    d = ((depth - lo) / (hi - lo) * 255).astype(np.uint8) if hi > lo else np.zeros((h, w), np.uint8)
    return PreprocessResult(np.repeat(d[..., None], 3, axis=2))  # relative inverse depth: near = bright


def openpose(image: np.ndarray, cache_dir: str | Path | None = None) -> PreprocessResult:
    from controlnet_aux.open_pose import OpenposeDetector
    from controlnet_aux.open_pose.body import Body

    from noisebrush.engine.pose import render_pose

    paths = _require(PREPROCESSORS["openpose"], cache_dir)
    try:
        detector = OpenposeDetector(Body(paths["body_pose_model.pth"]))
    except Exception as exc:
        raise UserError(f"cannot load the OpenPose body model: {str(exc).splitlines()[0]}") from None
    h, w = image.shape[:2]
    people = []
    for pose in detector.detect_poses(image):
        kps = [None if k is None else (k.x * w, k.y * h) for k in pose.body.keypoints[:NUM_KEYPOINTS]]
        people.append(Person(kps + [None] * (NUM_KEYPOINTS - len(kps))))
    return PreprocessResult(render_pose(people, w, h), people)


RUNNERS: dict[str, Callable[..., PreprocessResult]] = {
    "canny": lambda img, cache_dir=None: canny(img),
    "lineart": lambda img, cache_dir=None: lineart(img),
    "depth_anything": depth_anything,
    "openpose": openpose,
}


def run_preprocessor(name: str, image: np.ndarray, cache_dir: str | Path | None = None) -> PreprocessResult:
    if name not in PREPROCESSORS:
        raise UserError(f"unknown preprocessor {name!r}")
    return RUNNERS[name](image, cache_dir=cache_dir)


def fit_aspect(
    image: np.ndarray, width: int, height: int, mode: str = "letterbox"
) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Resize to (width, height) keeping the aspect ratio: 'letterbox' pads with black, 'crop' cuts the overflow.

    Returns the image and (scale, dx, dy), the mapping of input pixels to output pixels
    (for moving detected skeletons along).
    """
    h, w = image.shape[:2]
    scale = min(width / w, height / h) if mode == "letterbox" else max(width / w, height / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    out = np.zeros((height, width, 3), np.uint8)
    dx, dy = (width - nw) // 2, (height - nh) // 2
    src_x0, src_y0 = max(0, -dx), max(0, -dy)
    dst_x0, dst_y0 = max(0, dx), max(0, dy)
    cw, ch = min(nw - src_x0, width - dst_x0), min(nh - src_y0, height - dst_y0)
    out[dst_y0 : dst_y0 + ch, dst_x0 : dst_x0 + cw] = resized[src_y0 : src_y0 + ch, src_x0 : src_x0 + cw]
    return out, (scale, float(dx), float(dy))
