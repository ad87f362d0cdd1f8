"""Noisebrush: draw with a diffusion model.

Installed, the package holds `noisebrush.engine`, `noisebrush.gui` and `noisebrush.assets` (pyproject's
package-dir maps the repo's top-level folders there). In a plain source checkout, and for PyInstaller's
analysis of one, those folders sit beside this one: extend the search path to them, so the same import names
work everywhere.
"""

from pathlib import Path as _Path

__version__ = "0.1.0"

_here = _Path(__file__).resolve().parent
if not (_here / "engine").is_dir() and (_here.parent / "engine" / "__init__.py").is_file():
    __path__.append(str(_here.parent))  # noqa: F821 - a package's __path__
