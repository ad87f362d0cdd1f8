"""Packaging: the desktop entry, its install/uninstall, and the bundle spec's hooks (the bundle build itself is
packaging/smoke-test.sh: too slow for every CI run)."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from noisebrush.desktop import quote_exec

ROOT = Path(__file__).resolve().parent.parent
DESKTOP = ROOT / "packaging" / "noisebrush.desktop"


def validate_desktop_file(path: Path) -> None:
    """desktop-file-validate where installed; the spec's essential rules otherwise."""
    tool = shutil.which("desktop-file-validate")
    if tool:
        out = subprocess.run([tool, str(path)], capture_output=True, text=True)
        assert out.returncode == 0 and not out.stdout.strip(), out.stdout + out.stderr
        return
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str
    parser.read(path)
    entry = parser["Desktop Entry"]
    for key in ("Type", "Name", "Exec", "Icon", "Categories"):
        assert entry.get(key), key
    assert entry["Type"] == "Application" and entry["Categories"].endswith(";") and entry["MimeType"].endswith(";")


def test_desktop_file_is_valid():
    validate_desktop_file(DESKTOP)


def test_install_and_uninstall_desktop_entry_into_a_path_with_spaces(tmp_path):
    data = tmp_path / "my data home"
    env = {**os.environ, "XDG_DATA_HOME": str(data)}
    run = [sys.executable, "-m", "noisebrush"]
    out = subprocess.run([*run, "--install-desktop-entry"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    entry = data / "applications" / "noisebrush.desktop"
    icon = data / "icons" / "hicolor" / "256x256" / "apps" / "noisebrush.png"
    assert entry.is_file() and icon.stat().st_size > 1000
    validate_desktop_file(entry)
    exec_line = next(line for line in entry.read_text().splitlines() if line.startswith("Exec="))
    assert exec_line.endswith(" %F") and "noisebrush" in exec_line
    # installing twice changes nothing
    before = entry.read_text()
    assert subprocess.run([*run, "--install-desktop-entry"], env=env, cwd=ROOT, capture_output=True, timeout=60).returncode == 0
    assert entry.read_text() == before
    out = subprocess.run([*run, "--uninstall-desktop-entry"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert out.returncode == 0 and not entry.exists() and not icon.exists()


def test_exec_paths_are_quoted_per_the_desktop_spec():
    assert quote_exec("/usr/bin/noisebrush") == "/usr/bin/noisebrush"
    assert quote_exec("/home/a b/noisebrush") == '"/home/a b/noisebrush"'
    assert quote_exec('/x/"q"$y') == '"/x/\\"q\\"\\$y"'


def test_bundle_spec_names_every_hook_it_needs():
    spec = (ROOT / "packaging" / "noisebrush.spec").read_text()
    assert 'copy_metadata(dist, recursive=dist in ("diffusers", "transformers"))' in spec
    for needed in ('"diffusers"', '"transformers"', '"torch"', '"controlnet_aux"'):
        assert needed in spec, needed
    assert '"torch": "pyz+py"' in spec and '"transformers": "pyz+py"' in spec  # TorchScript needs sources
    assert '"assets"' in spec  # the embedded model and its text encoder (assets/models/default/minilm)
    assert "collect_submodules(" in spec and "COLLECT(" in spec and "onefile" not in spec
    assert '(so, "torchvision")' in spec and "binaries=binaries" in spec  # torchvision's compiled operators
    hooks = {p.name for p in (ROOT / "packaging" / "hooks").glob("hook-*.py")}
    assert {"hook-diffusers.py", "hook-controlnet_aux.py"} <= hooks
    # Qt's platform plugins come from PyInstaller's own PySide6 hook; the smoke test checks they land in the bundle
    assert "libqxcb.so" in (ROOT / "packaging" / "smoke-test.sh").read_text()


@pytest.mark.parametrize("script", ["build-linux.sh", "install-linux.sh", "install-bundle.sh", "smoke-test.sh"])
def test_shell_scripts_parse(script):
    assert subprocess.run(["bash", "-n", str(ROOT / "packaging" / script)]).returncode == 0


def test_lock_files_exist_per_platform():
    for flavour in ("cpu", "cuda"):
        text = (ROOT / "packaging" / "requirements" / f"linux-{flavour}.txt").read_text()
        assert "diffusers==" in text and "torch==" in text and "PySide6_Essentials==" in text
    assert "nvidia-" not in (ROOT / "packaging" / "requirements" / "linux-cpu.txt").read_text()


def test_an_installed_copy_has_no_bare_engine_or_gui_and_finds_its_model(tmp_path):
    """pip install --target: engine and gui land under noisebrush/, and the embedded model is found beside them."""
    target = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target), str(ROOT)]
    out = subprocess.run(pip, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert not (target / "engine").exists() and not (target / "gui").exists()
    code = (
        "import importlib.metadata as m, noisebrush.engine.paths as p\n"
        "tops = {t for t, dists in m.packages_distributions().items() if 'noisebrush' in dists}\n"
        "print(sorted(tops)); print((p.default_model_dir() / 'model_index.json').is_file()); print(p.__file__)"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    tops, found, where = out.stdout.split("\n")[:3]
    assert tops == "['noisebrush']" and found == "True" and where.startswith(str(target))


def test_the_lock_files_pin_every_runtime_dependency():
    """An installer that runs pip --no-deps from the locks must not miss a package pyproject.toml asks for."""
    import re

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    wanted = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()  # noqa: E731
    for flavour in ("cpu", "cuda"):
        text = (ROOT / "packaging" / "requirements" / f"linux-{flavour}.txt").read_text()
        pinned = {norm(line.split("==")[0]) for line in text.splitlines() if "==" in line}
        missing = [d for d in wanted if norm(re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0]) not in pinned]
        assert not missing, f"linux-{flavour}.txt lacks {missing}"
