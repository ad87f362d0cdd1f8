"""IP-Adapter files: where they are found (offline first), what model they fit, and the image encoder beside them.

The layout people have is the Hub repo h94/IP-Adapter: `models/ip-adapter_sd15.safetensors` (and -plus, -light)
with `models/image_encoder/` (OpenCLIP ViT-H), `sdxl_models/ip-adapter_sdxl_vit-h.safetensors` (which uses
`models/image_encoder/` too) and `sdxl_models/ip-adapter_sdxl.safetensors` with `sdxl_models/image_encoder/`
(ViT-bigG). Its keys are flat: `image_proj.*` and `ip_adapter.{1,3,5,…}.to_k_ip/to_v_ip.weight`, one odd id per
cross-attention layer in `unet.attn_processors` order. Found anywhere in the models folder or in the Hugging Face
cache, or named with `--ip-adapter FILE`. `.bin` pickles are refused like `.ckpt`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from noisebrush.engine.errors import UserError
from noisebrush.engine.sources import PICKLE_SUFFIXES, check_safetensors, refuse_pickle

HUB_REPO = "h94/IP-Adapter"
FAMILY_WIDTH = {768: "sd15", 2048: "sdxl"}  # the cross-attention width a family's UNet reads
# what to get, per family: the plain adapters first (they follow style and composition; -plus copies more detail)
PREFERRED = {
    "sd15": ("ip-adapter_sd15.safetensors", "ip-adapter-plus_sd15.safetensors", "ip-adapter_sd15_light_v11.safetensors"),
    "sdxl": ("ip-adapter_sdxl_vit-h.safetensors", "ip-adapter_sdxl.safetensors", "ip-adapter-plus_sdxl_vit-h.safetensors"),
}
WHAT_TO_GET = {
    "sd15": "models/ip-adapter_sd15.safetensors and models/image_encoder/",
    "sdxl": "sdxl_models/ip-adapter_sdxl_vit-h.safetensors and models/image_encoder/",
}
# the files of h94/IP-Adapter a family needs, for the download dialog (not the repo's 10+ GB of variants and .bin)
DOWNLOAD_FILES = {
    "sd15": ("models/ip-adapter_sd15.safetensors", "models/image_encoder/config.json",
             "models/image_encoder/model.safetensors"),
    "sdxl": ("sdxl_models/ip-adapter_sdxl_vit-h.safetensors", "models/image_encoder/config.json",
             "models/image_encoder/model.safetensors"),
}  # fmt: skip
_LAYER_KEY = re.compile(r"^ip_adapter\.(\d+)\.to_([kv])_ip\.weight$")
SCAN_DEPTH = 4
OWN_FOLDER = "ip-adapter"  # a model folder's own adapter (the embedded model's), beside its controlnets/


@dataclass(frozen=True)
class AdapterFiles:
    path: Path  # the .safetensors weights
    encoder: Path  # its image_encoder folder (config.json and model.safetensors)
    cross_dim: int  # the cross-attention width it was made for (768 SD1.5, 2048 SDXL)
    kind: str  # "plain": the encoder's projected embedding → 4 tokens; "plus": its hidden states → 16 tokens
    layers: int  # cross-attention layers it has weights for
    embed_dim: int  # what it reads from the encoder: projection_dim (plain) or hidden_size (plus)
    # the layers its maker measured for each mode (the file's `noisebrush.<mode>_layers` metadata: comma-separated
    # name prefixes), where the structural rule of reference_attention.mode_weights does not fit its model
    mode_layers: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def family(self) -> str:
        return FAMILY_WIDTH.get(self.cross_dim, f"{self.cross_dim}-wide")


def _shape(header: dict, key: str) -> list[int]:
    entry = header.get(key)
    return list(entry.get("shape", [])) if isinstance(entry, dict) else []


def declared_layers(header: dict) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The per-mode layer prefixes an adapter file's header declares in its metadata (see AdapterFiles.mode_layers)."""
    meta = header.get("__metadata__")
    out = []
    for mode in ("style", "composition"):
        value = meta.get(f"noisebrush.{mode}_layers") if isinstance(meta, dict) else None
        if isinstance(value, str) and value.strip():
            out.append((mode, tuple(p.strip() for p in value.split(",")[:64] if p.strip())))
    return tuple(out)


def read_adapter(path: Path) -> tuple[int, str, int, int, dict]:
    """(cross_dim, kind, layers, embed_dim, header) from an adapter file's header; UserError when it is not one."""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        refuse_pickle(path)
    if not path.is_file():
        raise UserError(f"IP-Adapter {path}: no such file")
    if path.suffix.lower() != ".safetensors":
        raise UserError(f"IP-Adapter {path.name}: expected a .safetensors file")
    header = check_safetensors(path)
    layers: dict[int, set[str]] = {}
    for key in header:
        m = _LAYER_KEY.match(key)
        if m:
            layers.setdefault(int(m.group(1)), set()).add(m.group(2))
    if not layers or not any(k.startswith("image_proj.") for k in header):
        raise UserError(f"{path.name} is not an IP-Adapter (it has no image_proj and ip_adapter weights)")
    ids = sorted(layers)
    expected = list(range(1, 2 * len(ids), 2))
    broken = next((i for i in expected if layers.get(i) != {"k", "v"}), None)
    if ids != expected or broken is not None:
        raise UserError(f"{path.name} is missing IP-Adapter weights (layer {broken or ids[-1]}): it is damaged or "
                        "not in h94's layout")  # fmt: skip
    k_shape = _shape(header, "ip_adapter.1.to_k_ip.weight")
    if len(k_shape) != 2:
        raise UserError(f"{path.name} is not a valid IP-Adapter (its first layer has no 2-D weight)")
    cross_dim = k_shape[1]
    proj, proj_in = _shape(header, "image_proj.proj.weight"), _shape(header, "image_proj.proj_in.weight")
    if len(proj) == 2 and "image_proj.norm.weight" in header and proj[0] % cross_dim == 0:
        return cross_dim, "plain", len(ids), proj[1], header
    if "image_proj.latents" in header and len(proj_in) == 2:
        return cross_dim, "plus", len(ids), proj_in[1], header
    raise UserError(f"{path.name} is an IP-Adapter variant Noisebrush does not run (FaceID or full-face); use "
                    "ip-adapter or ip-adapter-plus")  # fmt: skip


def _encoder_fits(folder: Path, kind: str, embed_dim: int) -> bool:
    from noisebrush.engine.models import read_json_object

    try:
        cfg = read_json_object(folder / "config.json")
    except UserError:
        return False
    cfg = cfg.get("vision_config", cfg) if isinstance(cfg.get("vision_config"), dict) else cfg
    return cfg.get("projection_dim" if kind == "plain" else "hidden_size") == embed_dim


def adapter_files(path: Path) -> AdapterFiles:
    """The adapter at `path` with the image encoder that fits it: `image_encoder/` beside it, or h94's
    `models/image_encoder/` or `sdxl_models/image_encoder/` one level up."""
    path = Path(path).expanduser()
    cross_dim, kind, layers, embed_dim, header = read_adapter(path)
    here, up = path.parent, path.parent.parent
    candidates = [here / "image_encoder", up / "models" / "image_encoder", up / "sdxl_models" / "image_encoder"]
    for folder in dict.fromkeys(candidates):
        if (folder / "config.json").is_file() and _encoder_fits(folder, kind, embed_dim):
            if not (folder / "model.safetensors").is_file():
                pickles = [p for p in folder.glob("*") if p.suffix.lower() in PICKLE_SUFFIXES]
                if pickles:
                    refuse_pickle(pickles[0])
                raise UserError(f"the image encoder {folder} has no model.safetensors")
            return AdapterFiles(path, folder, cross_dim, kind, layers, embed_dim, declared_layers(header))
    what = "projection" if kind == "plain" else "hidden"
    raise UserError(f"IP-Adapter {path.name} needs its image encoder ({embed_dim}-wide {what} output): put h94's "
                    f"image_encoder/ folder beside it")  # fmt: skip


def _hub_snapshot() -> Path | None:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(HUB_REPO, local_files_only=True, allow_patterns=["*.json", "*.safetensors"]))
    except Exception:  # not cached (or no hub library): nothing to offer from there
        return None


def candidates(models_root: Path | None = None) -> list[Path]:
    """Every ip-adapter*.safetensors in the models folder (a few levels deep) and in h94's cached snapshot."""
    from noisebrush.engine.catalog import models_dir

    roots = [models_root or models_dir()]
    snapshot = _hub_snapshot()
    if snapshot is not None:
        roots.append(snapshot)
    found: list[Path] = []
    for root in roots:
        if not root.is_dir():
            continue
        base = len(root.parts)
        for dirpath, dirnames, filenames in os.walk(root):
            if len(Path(dirpath).parts) - base >= SCAN_DEPTH:
                dirnames[:] = []
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            found += [Path(dirpath) / f for f in filenames if f.lower().startswith("ip-adapter") and f.endswith(".safetensors")]
    return found


def find_adapter(cross_dim: int, model_name: str, explicit: str = "", models_root: Path | None = None,
                 own: Path | None = None) -> AdapterFiles:  # fmt: skip
    """The adapter a reference uses on a model whose cross-attention is `cross_dim` wide: `explicit` when given,
    else the model's own (an `ip-adapter/` folder beside its parts, as the embedded model ships), else the first
    fitting one found (h94's plain adapter before -plus). Refuses with what to get."""
    family = FAMILY_WIDTH.get(cross_dim)
    if explicit:
        files = adapter_files(Path(explicit))
        if files.cross_dim != cross_dim:
            from noisebrush.engine.catalog import FAMILY_TITLES

            made = FAMILY_TITLES.get(files.family, files.family)
            have = FAMILY_TITLES.get(family or "", f"{cross_dim}-wide")
            raise UserError(f"IP-Adapter {files.path.name} is made for {made} models ({files.cross_dim}-wide), but "
                            f"{model_name} is {have}: choose one made for it")  # fmt: skip
        return files
    order = PREFERRED.get(family or "", ())

    def ranked():  # the model's own first: then no folder is walked for it (a live frame asks every time)
        if own is not None and (own / OWN_FOLDER).is_dir():
            yield from sorted((own / OWN_FOLDER).glob("ip-adapter*.safetensors"))
        yield from sorted(candidates(models_root), key=lambda p: (order.index(p.name) if p.name in order else len(order), str(p)))

    for path in ranked():
        try:
            files = adapter_files(path)
        except UserError:
            continue  # a broken or mismatched file elsewhere in the folder must not block a good one
        if files.cross_dim == cross_dim:
            return files
    if family is None:
        raise UserError(f"no IP-Adapter fits {model_name} (its text encoder is {cross_dim}-wide; IP-Adapters are made "
                        "for SD1.5 and SDXL): choose an SD1.5 or SDXL model for reference pictures")  # fmt: skip
    raise UserError(f"no {family.upper().replace('SD15', 'SD1.5')} IP-Adapter found: reference pictures need "
                    f"{WHAT_TO_GET[family]} from {HUB_REPO} in the models folder or the Hugging Face cache (the window "
                    "offers the download)")  # fmt: skip


def missing_family(message: str) -> str | None:
    """The family whose adapter a refusal from find_adapter asks for (so the window can offer its download)."""
    for family, title in (("sd15", "SD1.5"), ("sdxl", "SDXL")):
        if f"no {title} IP-Adapter found" in message:
            return family
    return None


def adapter_plan(sizes: dict[str, int], family: str):
    """The download of just the files a family's references need, from h94/IP-Adapter's file list."""
    from noisebrush.engine.sources import DownloadPlan

    files = tuple(f for f in DOWNLOAD_FILES[family] if f in sizes)
    if len(files) != len(DOWNLOAD_FILES[family]):
        raise UserError(f"{HUB_REPO} no longer has {', '.join(sorted(set(DOWNLOAD_FILES[family]) - set(files)))}")
    total = sum(sizes[f] for f in files)
    return DownloadPlan(files, total, sum(sizes.values()) - total)
