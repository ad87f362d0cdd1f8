"""Model packs: curated sets of models (a base model, its ControlNets, a live LoRA, an upscaler) that one click
puts in the models folder. The list is data, `assets/model_packs.json`; engine/downloads.py fetches the files."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from noisebrush.engine.errors import UserError
from noisebrush.engine.paths import assets_dir

ROLES = ("base", "controlnet", "lora", "upscaler")


@dataclass(frozen=True)
class PackFile:
    """One file from a Hub repo, saved at `dest` in the models folder; or, with `path` None, a whole diffusers
    pipeline (a folder) whose files are listed when the download starts."""

    repo: str
    path: str | None
    dest: str  # relative to the models folder, always inside it
    size: int  # approximate bytes (the server's Content-Length counts once it answers)
    role: str
    sha256: str | None = None
    kind: str | None = None  # a ControlNet's control kind
    select: bool = False  # the model to use once the pack is in

    @property
    def is_folder(self) -> bool:
        return self.path is None


@dataclass(frozen=True)
class Pack:
    id: str
    title: str
    family: str
    licence: str
    gated: bool
    description: str
    files: tuple[PackFile, ...]

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def selected(self) -> PackFile | None:
        return next((f for f in self.files if f.select), None)


def _safe_dest(dest: str, pack: str) -> str:
    p = PurePosixPath(dest)
    if not dest or p.is_absolute() or ".." in p.parts or any(part.startswith(".") for part in p.parts):
        raise UserError(f"model pack {pack}: {dest!r} is not a path inside the models folder")
    return str(p)


def _file(entry: dict, pack: str, folder: bool) -> PackFile:
    try:
        sha = entry.get("sha256")
        if sha is not None and (len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha)):
            raise ValueError(f"sha256 {sha!r} is not 64 hex digits")
        path = None if folder else str(entry["path"])
        if path is not None and path.endswith((".ckpt", ".pt", ".pth", ".bin", ".pkl")):
            raise ValueError(f"{path} is a pickle")
        role = str(entry["role"])
        if role not in ROLES:
            raise ValueError(f"role {role!r} is not one of {', '.join(ROLES)}")
        return PackFile(str(entry["repo"]), path, _safe_dest(str(entry["dest"]), pack), int(entry["size"]), role, sha,
                        entry.get("kind"), bool(entry.get("select", False)))  # fmt: skip
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"model pack {pack}: a file entry is malformed ({exc})") from None


def load_packs(path: Path | None = None) -> dict[str, Pack]:
    """The packs by id, from the shipped list (or `path`), checked: every dest inside the models folder, no pickles."""
    path = path or assets_dir() / "model_packs.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        entries = data["packs"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"the model pack list {path.name} cannot be read ({exc})") from None
    packs: dict[str, Pack] = {}
    for e in entries:
        try:
            pid = str(e["id"])
            files = tuple(_file(f, pid, False) for f in e.get("files", ())) + tuple(
                _file(f, pid, True) for f in e.get("folders", ())
            )
            packs[pid] = Pack(pid, str(e["title"]), str(e.get("family", "")), str(e["licence"]), bool(e["gated"]),
                              str(e.get("description", "")), files)  # fmt: skip
        except (KeyError, TypeError) as exc:
            raise UserError(f"the model pack list {path.name} has a malformed pack ({exc})") from None
    return packs


def is_installed(f: PackFile, models: Path) -> bool:
    target = models / f.dest
    if f.is_folder:
        return (target / "model_index.json").is_file() or (target / "config.json").is_file()
    return target.is_file()


def pack_state(pack: Pack, models: Path) -> tuple[int, int]:
    """(files in the models folder, files in the pack)."""
    return sum(is_installed(f, models) for f in pack.files), len(pack.files)


def still_needed(pack: Pack, models: Path) -> list[PackFile]:
    return [f for f in pack.files if not is_installed(f, models)]


def free_bytes(folder: Path) -> int:
    """Free space where `folder` is (or its nearest existing parent). A function so tests can fill the disk."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def describe(pack: Pack, models: Path) -> str:
    have, total = pack_state(pack, models)
    state = "installed" if have == total else f"{have} of {total} files" if have else "not installed"
    gated = "; gated: needs your Hugging Face token" if pack.gated else ""
    return f"{pack.id:18s} {size_text(pack.size):>8s}  {state:14s} {pack.title} ({pack.licence}{gated})"


def size_text(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"
