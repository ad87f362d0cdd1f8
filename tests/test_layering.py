"""Import contracts: engine/ imports no Qt and nothing from gui/; gui/ (a user of the Backend protocol) imports no
torch, diffusers or transformers; training/ imports nothing from gui/. Checked in the sources and at run time."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
QT = ("PySide6", "PyQt5", "PyQt6", "shiboken6")
HEAVY = ("torch", "diffusers", "transformers")
CONTRACTS = {  # folder: module prefixes its sources may not import
    "engine": (*QT, "noisebrush.gui", "gui"),
    "gui": HEAVY,
    "training": ("noisebrush.gui", "gui", *QT),
}


def imported_names(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


@pytest.mark.parametrize("folder", sorted(CONTRACTS))
def test_sources_keep_the_import_contract(folder):
    forbidden = CONTRACTS[folder]
    offenders = [f"{p.relative_to(ROOT)}: {n}" for p in (ROOT / folder).rglob("*.py") for n in imported_names(p)
                 if any(n == f or n.startswith(f + ".") for f in forbidden)]  # fmt: skip
    assert not offenders


def _loaded_after_importing(modules: list[str], prefixes: tuple[str, ...]) -> list[str]:
    code = (
        f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules if m.split('.')[0] in {prefixes!r}}}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    return eval(out.stdout.strip())  # a printed list of names


def test_importing_every_engine_module_loads_no_qt():
    modules = sorted(f"noisebrush.engine.{p.stem}" for p in (ROOT / "engine").glob("*.py") if p.stem != "__init__")
    modules += sorted(f"noisebrush.engine.backends.{p.stem}" for p in (ROOT / "engine" / "backends").glob("*.py"))
    assert _loaded_after_importing(modules, QT) == []


def test_the_window_and_the_engine_policy_load_no_diffusers_until_a_job_runs():
    modules = ["noisebrush.gui.window", "noisebrush.gui.app", "noisebrush.engine.engine"]
    assert _loaded_after_importing(modules, HEAVY) == []
