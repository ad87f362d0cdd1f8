"""A real ComfyUI server for the tests: unpacked from the vendored source, in its own venv, on 127.0.0.1 with --cpu.

Everything slow is cached under `.cache/comfyui/` in the repository (gitignored) and reused between runs:
the unpacked source, its venv and the test checkpoint. The venv holds only what ComfyUI needs beyond the project's
own venv: a `.pth` file puts the project's site-packages after its own, so torch (5 GB) is not installed twice.
ComfyUI is GPL and only ever runs as a separate process; the product never imports it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import subprocess
import sys
import sysconfig
import tarfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache" / "comfyui"
CHECKPOINT = "nb_tiny_sd15.safetensors"
CONTROLNET = "nb_tiny_scribble.safetensors"
LORA = "nb_tiny_lora.safetensors"


def vendored_source() -> Path | None:
    """The ComfyUI tarball: $NOISEBRUSH_COMFYUI_SOURCE, or ../shared/vendor/ComfyUI-*.tar.gz beside the repository."""
    if env := os.environ.get("NOISEBRUSH_COMFYUI_SOURCE"):
        return Path(env)
    for vendor in (REPO.parent / "shared" / "vendor", Path("/work/shared/vendor")):
        found = sorted(vendor.glob("ComfyUI-*.tar.gz")) if vendor.is_dir() else []
        if found:
            return found[-1]
    return None


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    """One preparer at a time (pytest-xdist workers or two test runs share the cache)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _extract(tar: tarfile.TarFile, dest: Path) -> None:
    """extractall with the "data" filter, or (Python before 3.11.4, e.g. Debian's 3.11.2, which lacks it) with the
    same refusals checked here: no member or link target outside dest, no devices."""
    if hasattr(tarfile, "data_filter"):
        tar.extractall(dest, filter="data")
        return
    root = dest.resolve()
    for m in tar.getmembers():
        where = (root / m.name).resolve()
        target = (where.parent / m.linkname).resolve() if m.issym() else (root / m.linkname).resolve()
        if not where.is_relative_to(root) or m.isdev() or ((m.issym() or m.islnk()) and not target.is_relative_to(root)):
            raise RuntimeError(f"{m.name}: outside the folder it unpacks to")
    tar.extractall(dest)


def _unpack(tarball: Path) -> Path:
    root = CACHE / tarball.name.removesuffix(".tar.gz")
    if not (root / "ComfyUI" / "main.py").is_file():
        tmp = root.with_suffix(".partial")
        subprocess.run(["rm", "-rf", str(tmp)], check=True)
        tmp.mkdir(parents=True)
        with tarfile.open(tarball) as tar:
            _extract(tar, tmp)
        subprocess.run(["rm", "-rf", str(root)], check=True)
        tmp.rename(root)
    return root / "ComfyUI"


def _venv(source: Path) -> Path:
    venv = CACHE / "venv"
    py = venv / "bin" / "python"
    stamp = venv / ".installed"
    reqs = (source / "requirements.txt").read_text()
    if stamp.is_file() and stamp.read_text() == reqs:
        return py
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()  # fmt: skip
    Path(purelib, "noisebrush_project.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    wanted = [ln.strip() for ln in reqs.splitlines() if ln.strip() and not ln.startswith("#")]
    # torch comes from the project's venv. torchaudio only serves ComfyUI's audio nodes, which then stay unloaded.
    wanted = [r for r in wanted if r.split("=")[0].split(">")[0] not in {"torch", "torchvision", "torchaudio"}]
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", *wanted, "requests"], check=True
    )  # fmt: skip  (upstream's requirements omit requests, which it imports)
    stamp.write_text(reqs)
    return py


def _write_models(base: Path) -> None:
    """An SD1.5-shaped checkpoint ComfyUI recognises (UNet 320 channels, 768-wide cross-attention, CLIP-L and SD VAE
    shapes; only two UNet levels), a scribble ControlNet for it and a LoRA, all random and seeded."""
    script = Path(__file__).with_name("comfy_models.py")
    made_by = base / "models" / "made-by.txt"  # the script's text: a changed script rebuilds the models
    if made_by.is_file() and made_by.read_text() == script.read_text():
        return
    subprocess.run([sys.executable, str(script), str(base / "models")], check=True)
    made_by.write_text(script.read_text())


def prepare() -> tuple[Path, Path, Path]:
    """(python, ComfyUI folder, base directory), built once and cached."""
    tarball = vendored_source()
    if tarball is None or not tarball.is_file():
        raise FileNotFoundError("the vendored ComfyUI source (../shared/vendor/ComfyUI-*.tar.gz) is not here")
    with _locked("prepare"):
        source = _unpack(tarball)
        py = _venv(source)
        base = CACHE / "base"
        (base / "custom_nodes").mkdir(parents=True, exist_ok=True)  # ComfyUI lists it at start
        _write_models(base)
    return py, source, base


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    """One ComfyUI process; `url` once it answers. Each server gets its own output and temp folders."""

    def __init__(self, py: Path, source: Path, base: Path, name: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = CACHE / f"server-{name}-{self.port}.log"
        own = CACHE / "run" / f"{name}-{self.port}"
        for sub in ("output", "temp", "input", "user"):
            (own / sub).mkdir(parents=True, exist_ok=True)
        self.input_dir = own / "input"  # where /upload/image puts pictures
        args = [str(py), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
                "--preview-method", "latent2rgb", "--base-directory", str(base), "--disable-auto-launch",
                "--output-directory", str(own / "output"), "--temp-directory", str(own / "temp"),
                "--input-directory", str(own / "input"), "--user-directory", str(own / "user"),
                "--database-url", f"sqlite:///{own / 'comfyui.db'}"]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(args, cwd=source, stdout=self._log, stderr=subprocess.STDOUT, env=env)

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited ({self.proc.returncode}): {self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/system_stats", timeout=2) as r:
                    json.load(r)
                    return
            except OSError:
                time.sleep(0.5)
        raise TimeoutError(f"ComfyUI did not answer in {timeout:.0f} s: {self.log_tail()}")

    def log_tail(self, n: int = 2000) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")[-n:]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()
