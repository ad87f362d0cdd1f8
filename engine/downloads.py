"""Downloading a model pack into the models folder: resumable, verified, and never half-there.

Each file streams into `<models>/.downloads/<dest>.part` (the catalog scan skips dot folders), resuming with an
HTTP Range request after a cut connection or a restart, is checked against its sha256 (the pack's, else the one
the Hub sends for LFS files), and only then moves to its place. A cancelled or failed file's part is deleted; a
cut one is kept to resume. The endpoint is the Hub's, or HF_ENDPOINT (tests serve small files on 127.0.0.1).
The token goes in an Authorization header only: never a log line, a setting or an error message.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

from noisebrush.engine.errors import GatedError, UserError
from noisebrush.engine.packs import Pack, PackFile, free_bytes, still_needed
from noisebrush.engine.sources import hub_endpoint, offline, plan_download

STAGING = ".downloads"
MARGIN = 200_000_000  # bytes left free on the disk after a download
CHUNK = 1 << 18  # 256 KiB: progress several times a second on a slow line
SHA256 = re.compile(r"^[0-9a-f]{64}$")


class Cancelled(UserError):
    pass


@dataclass(frozen=True)
class DownloadProgress:
    file: str  # the file's name
    index: int  # 1-based, of `files`
    files: int
    file_done: int
    file_total: int
    done: int  # bytes of the whole download (this session's, resumed parts included)
    total: int
    rate: float  # bytes per second since the start
    eta_s: float | None


def file_url(repo: str, path: str) -> str:
    return f"{hub_endpoint()}/{repo}/resolve/main/{quote(path)}"


def hub_token() -> str | None:
    """The token the Hugging Face tools use (HF_TOKEN, else their token file)."""
    try:
        from huggingface_hub import get_token

        return get_token()
    except Exception:  # no hub library or an unreadable file: no token
        return None


def save_token(token: str) -> Path:
    """Keep the token where the Hugging Face tools keep theirs (their token file, readable by this user only)."""
    from huggingface_hub import constants

    path = Path(constants.HF_TOKEN_PATH)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token.strip())
    return path


def _open(url: str, start: int, token: str | None, repo: str):
    req = urllib.request.Request(url, headers={"User-Agent": "noisebrush"})
    if start:
        req.add_header("Range", f"bytes={start}-")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    host = urlsplit(url).netloc
    try:
        return urllib.request.urlopen(req, timeout=30)
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise GatedError(repo, refused=bool(token)) from None
        if exc.code == 416:  # the part is already whole
            return None
        raise UserError(f"{host} answered {exc.code} for {url.rsplit('/', 1)[-1]}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UserError(f"cannot reach {host} ({reason}); check the connection and try again") from None


def fetch_file(f: PackFile, models: Path, token: str | None, cancelled: threading.Event | None,
               on_bytes: Callable[[int, int], None]) -> Path:  # fmt: skip
    """Download one file to models/f.dest (see the module's note); on_bytes(file done, file total)."""
    assert f.path is not None
    part = models / STAGING / (f.dest + ".part")
    part.parent.mkdir(parents=True, exist_ok=True)
    start = part.stat().st_size if part.exists() else 0
    resp = _open(file_url(f.repo, f.path), start, token, f.repo)
    digest = hashlib.sha256()
    try:
        if resp is not None and resp.status == 200:
            start = 0  # the server ignored the Range: start over
        total = start + int(resp.headers.get("Content-Length") or 0) if resp is not None else start
        expected = (f.sha256 or (resp.headers.get("X-Linked-Etag", "") if resp is not None else "")).strip('"').lower()
        if free_bytes(models) < total - start + MARGIN:
            raise UserError(f"not enough disk space for {Path(f.dest).name}: {(total - start) / 1e9:.2f} GB needed, "
                            f"{free_bytes(models) / 1e9:.2f} GB free in {models}")  # fmt: skip
        if start:
            with part.open("rb") as old:  # the resumed part's bytes count towards the checksum
                for block in iter(lambda: old.read(CHUNK), b""):
                    digest.update(block)
        done = start
        on_bytes(done, total)
        with part.open("ab" if start else "wb") as out:
            while resp is not None:
                if cancelled is not None and cancelled.is_set():
                    raise Cancelled(f"download of {Path(f.dest).name} cancelled")
                try:
                    block = resp.read(CHUNK)
                except (OSError, ValueError, http.client.HTTPException) as exc:  # IncompleteRead: a cut
                    raise ConnectionError(str(exc)) from None
                if not block:
                    break
                out.write(block)
                digest.update(block)
                done += len(block)
                on_bytes(done, total)
        if total and done < total:
            raise ConnectionError(f"{done} of {total} bytes")
    except ConnectionError:  # a cut: keep the part, the next try resumes it
        raise UserError(f"the connection was lost during {Path(f.dest).name} ({part.stat().st_size / 1e6:.1f} MB "
                        f"kept); it resumes where it stopped next time") from None  # fmt: skip
    except BaseException:
        part.unlink(missing_ok=True)  # cancelled or failed: nothing partial stays
        raise
    finally:
        if resp is not None:
            resp.close()
    if SHA256.match(expected) and digest.hexdigest() != expected:
        part.unlink(missing_ok=True)
        raise UserError(f"{Path(f.dest).name} arrived damaged (its sha256 does not match) and was deleted; try again")
    target = models / f.dest
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(part, target)
    return target


def expand_folder(f: PackFile, token: str | None) -> list[PackFile]:
    """A whole pipeline's files (one precision, no root checkpoints), listed by the Hub's API."""
    from noisebrush.engine.sources import hub_file_sizes

    sizes = hub_file_sizes(f.repo, token=token)
    return [PackFile(f.repo, p, f"{f.dest}/{p}", sizes[p], f.role) for p in plan_download(sizes).files]


def download_pack(pack: Pack, models: Path, progress: Callable[[DownloadProgress], None] | None = None,
                  cancelled: threading.Event | None = None, token: str | None = None) -> list[Path]:  # fmt: skip
    """Every file of the pack not yet in the models folder. Raises UserError (GatedError, Cancelled) with one
    sentence; what finished stays, a cut file resumes next time."""
    if offline():
        raise UserError("Noisebrush is offline (HF_HUB_OFFLINE is set), so model packs cannot be downloaded now")
    token = token or (hub_token() if pack.gated else None)
    if pack.gated and not token:
        raise GatedError(pack.title)
    todo: list[PackFile] = []
    for f in still_needed(pack, models):
        todo += expand_folder(f, token) if f.is_folder else [f]
    todo = [f for f in todo if not (models / f.dest).is_file()]
    total = sum(f.size for f in todo)
    staged = sum((models / STAGING / (f.dest + ".part")).stat().st_size for f in todo
                 if (models / STAGING / (f.dest + ".part")).exists())  # fmt: skip
    if free_bytes(models) < total - staged + MARGIN:
        raise UserError(f"not enough disk space for {pack.title}: about {(total - staged) / 1e9:.1f} GB needed, "
                        f"{free_bytes(models) / 1e9:.1f} GB free in {models}")  # fmt: skip
    t0, before, fetched, paths = time.monotonic(), 0, 0, []
    for i, f in enumerate(todo, 1):
        rest = sum(g.size for g in todo[i:])  # the catalog's sizes until a server says the real one
        resumed: list[int] = []

        def on_bytes(done: int, file_total: int, f=f, i=i, rest=rest, resumed=resumed, before=before,
                     fetched=fetched) -> None:  # fmt: skip
            if not resumed:
                resumed.append(done)  # a resumed part's bytes did not come now: not in the rate
            if progress is None:
                return
            now, grand = before + done, before + file_total + rest
            rate = (fetched + done - resumed[0]) / max(1e-6, time.monotonic() - t0)
            eta = (grand - now) / rate if rate > 0 else None
            progress(DownloadProgress(Path(f.dest).name, i, len(todo), done, file_total, now, grand, rate, eta))

        paths.append(fetch_file(f, models, token, cancelled, on_bytes))
        size = (models / f.dest).stat().st_size
        before += size
        fetched += size - (resumed[0] if resumed else 0)
    return paths
