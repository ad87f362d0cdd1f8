"""Where a model comes from: the embedded one, a diffusers folder, a single .safetensors file, or a Hub id.

Offline first: a Hub id loads from the local Hugging Face cache with no network call; an
uncached one fails at once, unless the caller explicitly allows a download (with progress).
Pickle checkpoints (.ckpt) are refused: unpickling can run arbitrary code.
"""

from __future__ import annotations

import json
import os
import re
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from noisebrush.engine.errors import GatedError, UserError
from noisebrush.engine.paths import default_model_dir

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# what a pipeline download needs: configs, tokenizer files and safetensors weights, never pickles
HUB_PATTERNS = ["*.json", "*.txt", "*.model", "*.safetensors"]

Progress = Callable[[int, int], None]  # (bytes done, bytes total)


@dataclass(frozen=True)
class ModelSource:
    kind: str  # "embedded" | "folder" | "single_file" | "hub"
    ref: str
    path: Path  # a local folder (embedded, folder, hub snapshot) or a file (single_file)


def is_hub_id(ref: str) -> bool:
    return bool(HUB_ID.match(ref)) and not Path(ref).expanduser().exists()


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def check_safetensors(path: Path) -> dict:
    """Read a .safetensors header, refusing damaged or truncated files with a clear message. Returns the header."""
    if not path.is_file():  # a FIFO named .safetensors would block the reader for ever
        raise UserError(f"{path.name} is not a regular file; not opened")
    size = path.stat().st_size
    try:
        with path.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ValueError("the file is shorter than a safetensors header")
            (n,) = struct.unpack("<Q", head)
            if n > min(size - 8, 100_000_000):
                raise ValueError("the header length is impossible")
            header = json.loads(f.read(n))
        if not isinstance(header, dict):
            raise ValueError("the header is not a table of tensors")
        entries = {k: v for k, v in header.items() if k != "__metadata__"}
        if not all(isinstance(v, dict) and isinstance(v.get("data_offsets"), list) and len(v["data_offsets"]) == 2
                   and isinstance(v.get("shape"), list) for v in entries.values()):  # fmt: skip
            raise ValueError("a tensor entry has no shape or data offsets")
        end = max((int(v["data_offsets"][1]) for v in entries.values()), default=0)
    except (ValueError, TypeError, UnicodeDecodeError, RecursionError, OverflowError) as exc:  # Overflow: int(inf)
        raise UserError(f"{path.name} is not a valid .safetensors file ({exc}); it may be damaged or incomplete") from None
    if 8 + n + end > size:
        missing = 8 + n + end - size
        if missing > 1 << 50:  # a petabyte (or more than a float holds): not a cut-short download but a wrong header
            raise UserError(f"{path.name} is not a valid .safetensors file (a tensor ends past any real file's end)")
        raise UserError(f"{path.name} is truncated: {missing / 1e6:.1f} MB are missing (an interrupted download?)")
    return header


def refuse_pickle(path: Path) -> None:
    raise UserError(
        f"{path.name} is a pickle checkpoint: loading one can run any code hidden inside it, so Noisebrush does "
        f"not open them. Use the .safetensors version of this model, or convert it once in a tool you trust."
    )


def resolve_source(
    ref: str,
    *,
    allow_download: bool = False,
    progress: Progress | None = None,
    cancelled: threading.Event | None = None,
    cache_dir: str | Path | None = None,
    fetch: Callable[..., str] | None = None,
) -> ModelSource:
    """Turn a user's model reference into a local path, downloading only when allowed."""
    if not ref:
        return ModelSource("embedded", "", default_model_dir())
    path = Path(ref).expanduser()
    if path.is_file():
        if path.suffix.lower() in PICKLE_SUFFIXES:
            refuse_pickle(path)
        if path.suffix.lower() == ".gguf":  # a quantized transformer (engine/gguf_files.py)
            from noisebrush.engine.gguf_files import gguf_header

            gguf_header(path)
            return ModelSource("single_file", ref, path)
        if path.suffix.lower() != ".safetensors":
            raise UserError(f"{path.name}: expected a .safetensors or .gguf checkpoint, or a diffusers model folder")
        check_safetensors(path)
        return ModelSource("single_file", ref, path)
    if path.is_dir():
        return ModelSource("folder", ref, path)
    if is_hub_id(ref):
        return ModelSource("hub", ref, hub_snapshot(ref, allow_download, progress, cancelled, cache_dir, fetch))
    raise UserError(f"model {ref}: no such file or folder, and not a Hugging Face id (owner/name)")


def hub_snapshot(
    repo: str,
    allow_download: bool,
    progress: Progress | None = None,
    cancelled: threading.Event | None = None,
    cache_dir: str | Path | None = None,
    fetch: Callable[..., str] | None = None,
) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:  # the cache first, with no network call at all
        return Path(snapshot_download(repo, local_files_only=True, cache_dir=cache_dir, allow_patterns=HUB_PATTERNS))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError):
        pass
    if offline() or not allow_download:
        why = "Noisebrush is offline (HF_HUB_OFFLINE is set)" if offline() else "downloads were not allowed for this request"
        raise UserError(f"{repo} is not in the local Hugging Face cache and {why}; download it once while online")
    return download_snapshot(repo, progress, cancelled, cache_dir, fetch)


def byte_progress(
    progress: Progress | None,
    cancelled: threading.Event | None,
    cancel_message: str,
    report: Callable[[int, int], tuple[int, int]] = lambda done, total: (done, total),
):
    """A tqdm class for huggingface_hub's `tqdm_class`: forwards byte counts to `progress` and honours cancel.

    `report` maps (bytes of this bar, its total) to what `progress` receives (for several files in a row).
    """
    from tqdm.auto import tqdm

    class Bytes(tqdm):
        done = 0  # counted here: a disabled tqdm does not count

        def update(self, n=1):
            if cancelled is not None and cancelled.is_set():
                raise UserError(cancel_message)
            self.done += n or 0
            if progress is not None and getattr(self, "unit", "B") == "B":
                progress(*report(int(self.done), int(self.total or 0)))
            return super().update(n)

    return Bytes


@dataclass(frozen=True)
class DownloadPlan:
    files: tuple[str, ...]
    total_bytes: int
    skipped_bytes: int  # other variants and whole-model checkpoints the pipeline does not read


WEIGHT_NAMES = ("diffusion_pytorch_model", "model")


def plan_download(sizes: dict[str, int]) -> DownloadPlan:
    """The files a diffusers pipeline reads, from a repo's file list (path → bytes).

    Configs, tokenizers and, in each component folder, one weights file: the plain one (what from_pretrained
    loads), else its fp16 variant. A repo's root checkpoints (the same model as one file, often several GB in
    several precisions) and the other variants are left out. A repo with no model_index.json (a ControlNet, say)
    keeps its one plain weights file the same way.
    """
    small = [p for p in sizes if p.endswith((".json", ".txt", ".model")) and not p.startswith(".")]
    weights: dict[str, list[str]] = {}
    for p in sizes:
        if p.endswith(".safetensors"):
            folder = p.rsplit("/", 1)[0] if "/" in p else ""
            weights.setdefault(folder, []).append(p)
    chosen = []
    for folder, found in weights.items():
        if folder == "" and "model_index.json" in sizes:
            continue  # root checkpoints beside a pipeline
        names = {p.rsplit("/", 1)[-1]: p for p in found}
        pick = next((names[f"{n}.safetensors"] for n in WEIGHT_NAMES if f"{n}.safetensors" in names), None)
        pick = pick or next((names[f"{n}.fp16.safetensors"] for n in WEIGHT_NAMES if f"{n}.fp16.safetensors" in names), None)
        chosen.append(pick or min(found, key=lambda p: sizes[p]))
    files = tuple(sorted(small + chosen))
    total = sum(sizes[p] for p in files)
    return DownloadPlan(files, total, sum(v for p, v in sizes.items() if p.endswith(".safetensors")) - total)


def hub_endpoint() -> str:
    """The Hub's address, or HF_ENDPOINT's (read per call: tests serve a stand-in on 127.0.0.1)."""
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def hub_file_sizes(repo: str, token: str | None = None) -> dict[str, int]:
    """A Hub repo's files and their sizes (one API call to the Hub, or to HF_ENDPOINT; needs the network)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError

    try:
        info = HfApi(endpoint=hub_endpoint()).model_info(repo, files_metadata=True, token=token or None)
    except GatedRepoError:
        raise GatedError(repo, refused=bool(token)) from None
    except Exception as exc:
        raise UserError(f"cannot list {repo}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    return {s.rfilename: int(s.size or 0) for s in info.siblings or []}


def download_snapshot(
    repo: str,
    progress: Progress | None = None,
    cancelled: threading.Event | None = None,
    cache_dir: str | Path | None = None,
    fetch: Callable[..., str] | None = None,
    plan: DownloadPlan | None = None,
) -> Path:
    """Download a Hub repo's pipeline files (the plan's, else every config and weights file) into the standard
    cache. hf_hub resumes interrupted files."""
    from huggingface_hub import snapshot_download

    fetch = fetch or snapshot_download
    Bytes = byte_progress(progress, cancelled, f"download of {repo} cancelled; what arrived is kept and resumes next time")
    patterns = list(plan.files) if plan is not None else HUB_PATTERNS
    try:
        return Path(fetch(repo, cache_dir=cache_dir, allow_patterns=patterns, tqdm_class=Bytes))
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"cannot download {repo}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
