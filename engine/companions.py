"""Companions: the diffusers folder that lends a transformer-only file (flux1-dev.safetensors, sd3.5_large.safetensors,
any GGUF) its text encoders, tokenizers and VAE.

The most common Flux and SD3.5 downloads hold the transformer alone; the rest of the pipeline is the same across a
family (Flux dev and schnell share CLIP-L, T5 and the VAE; SD3 and SD3.5 share CLIP-L, CLIP-G, T5 and the VAE), so
any diffusers folder of the family found on this computer serves. Searched, in order: the file's own folder (the
published repos put the file beside their diffusers folders), the models folder and folders scanned this session
(each two levels down), and the Hugging Face cache snapshots of the published ids.
No torch at import: the catalog finds companions through here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HUB_IDS = {
    "flux": ("black-forest-labs/FLUX.1-dev", "black-forest-labs/FLUX.1-schnell"),
    "sd3": ("stabilityai/stable-diffusion-3.5-large", "stabilityai/stable-diffusion-3.5-medium",
            "stabilityai/stable-diffusion-3-medium-diffusers"),
}  # fmt: skip
# what a companion must hold; SD3's T5 is optional (diffusers runs SD3 without it), Flux's T5 is text_encoder_2
PARTS = ("vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2")
HOW_TO_GET = {
    "flux": "put the diffusers folder of FLUX.1-dev (or schnell) in your models folder",
    "sd3": "put the diffusers folder of SD3.5 Large, SD3.5 Medium or SD3 Medium in your models folder",
}
WEIGHTS = ("*.safetensors", "*.bin", "*.safetensors.index.json")
_scanned_roots: list[Path] = []  # models folders the catalog scanned this session (the GUI's may differ from the default)


@dataclass(frozen=True)
class Companion:
    path: Path
    name: str  # a folder's name, or the Hub id of a cache snapshot

    @property
    def note(self) -> str:
        return f"text encoders and VAE from {self.name}"


def remember_root(folder: Path) -> None:
    if folder not in _scanned_roots:
        _scanned_roots.append(folder)


def serves(folder: Path, family: str) -> bool:
    """A diffusers folder of `family` with every part a transformer-only file lacks (its own transformer may be absent)."""
    from noisebrush.engine.flow import flow_family, json_object

    if flow_family(folder) != family:
        return False
    index = json_object(folder / "model_index.json")
    for part in PARTS:
        entry, sub = index.get(part), folder / part
        if not (isinstance(entry, list) and None not in entry and sub.is_dir()):
            return False
        if not part.startswith("tokenizer") and not any(any(sub.glob(p)) for p in WEIGHTS):
            return False  # a cache snapshot with its configs but not its weights
    return True


def _folders(root: Path, depth: int = 2) -> Iterator[Path]:
    """`root` and the folders below it, `depth` levels down, not entering a diffusers folder or a hidden one."""
    if not root.is_dir():
        return
    yield root
    if depth == 0 or (root / "model_index.json").is_file():
        return
    try:
        children = sorted(c for c in root.iterdir() if c.is_dir() and not c.name.startswith("."))
    except OSError:
        return
    for child in children:
        yield from _folders(child, depth - 1)


def hub_snapshots(family: str) -> Iterator[tuple[Path, str]]:
    """Cached snapshots of the family's published ids, offline (no network call)."""
    from huggingface_hub import try_to_load_from_cache

    for repo in HUB_IDS[family]:
        try:
            found = try_to_load_from_cache(repo, "model_index.json")
        except (OSError, ValueError):
            continue
        if isinstance(found, str):
            yield Path(found).parent, repo


def find_companion(path: Path, family: str) -> Companion | None:
    """The first diffusers folder of `family` on this computer that serves `path` (see the module's docstring)."""
    from noisebrush.engine.catalog import models_dir
    from noisebrush.engine.models import model_folder_name

    # Not the file's parent: a file in ~/Downloads would walk all of ~/*/* on every scan.
    roots = [path.parent, models_dir(), *_scanned_roots]
    seen: set[Path] = set()
    for root in roots:
        for folder in _folders(root):
            if folder in seen:
                continue
            seen.add(folder)
            if (folder / "model_index.json").is_file() and serves(folder, family):
                return Companion(folder, model_folder_name(folder))
    for folder, repo in hub_snapshots(family):
        if serves(folder, family):
            return Companion(folder, repo)
    return None


def open_with_companion(path: Path, family: str, configs: Path, companion: Path, dtype: Any, gguf: bool) -> Any:
    """The transformer from the file (with its variant's bundled config, dequantized on the fly for GGUF), the rest of
    the pipeline from the companion. The scheduler is the variant's own: Flux dev shifts its sigmas with the picture's
    size and schnell does not, so a schnell folder lending its encoders to a dev file must not lend its scheduler."""
    import diffusers

    from noisebrush.engine.flow import PIPELINES, TRANSFORMER_CLASS, empty_parts

    cls = getattr(diffusers, TRANSFORMER_CLASS[family])
    quant = {"quantization_config": diffusers.GGUFQuantizationConfig(compute_dtype=dtype)} if gguf else {}
    transformer = cls.from_single_file(str(path), config=str(configs), subfolder="transformer", local_files_only=True,
                                       torch_dtype=dtype, **quant)  # fmt: skip
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler.from_pretrained(configs / "scheduler")
    pipe_cls = getattr(diffusers, PIPELINES[(family, False, "txt2img")])
    return pipe_cls.from_pretrained(companion, transformer=transformer, scheduler=scheduler, torch_dtype=dtype,
                                    local_files_only=True, **empty_parts(companion, "transformer"))  # fmt: skip
