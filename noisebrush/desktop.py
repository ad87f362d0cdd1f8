"""Install and remove the freedesktop menu entry and icon for the current user (no root, no torch)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

APP_ID = "noisebrush"


def _data_home() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")


def _asset(*parts: str) -> Path:
    from noisebrush.engine.paths import assets_dir

    return assets_dir().joinpath(*parts)


def desktop_template() -> str:
    bundle = getattr(sys, "_MEIPASS", None)
    from noisebrush.engine.paths import installed_share

    candidates = [
        Path(bundle) / "packaging" if bundle else None,
        Path(__file__).resolve().parent.parent / "packaging",
        installed_share() / "packaging",
    ]
    for folder in candidates:
        if folder is not None and (folder / "noisebrush.desktop").is_file():
            return (folder / "noisebrush.desktop").read_text()
    raise FileNotFoundError("packaging/noisebrush.desktop is missing from this installation")


def quote_exec(path: str) -> str:
    """Quote a program path for a .desktop Exec key (spaces, quotes, backslashes, $ and `)."""
    if not any(c in path for c in " \t\n\"'\\><~|&;$*?#()`"):
        return path
    escaped = path.replace("\\", "\\\\").replace('"', '\\"').replace("`", "\\`").replace("$", "\\$")
    return f'"{escaped}"'


def launcher_path() -> str:
    """The command that starts this installation of Noisebrush."""
    if getattr(sys, "frozen", False):
        return sys.executable
    found = shutil.which("noisebrush")
    script = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0] else None
    if script is not None and script.name == "noisebrush" and script.is_file():
        return str(script)
    return found or f"{sys.executable} -m noisebrush"


def install_desktop_entry(exec_path: str | None = None) -> list[Path]:
    exec_cmd = quote_exec(exec_path or launcher_path())
    if exec_path is None and " -m noisebrush" in exec_cmd:
        exec_cmd = f"{quote_exec(sys.executable)} -m noisebrush"
    text = desktop_template().replace("Exec=noisebrush %F", f"Exec={exec_cmd} %F")
    apps = _data_home() / "applications"
    icons = _data_home() / "icons" / "hicolor" / "256x256" / "apps"
    apps.mkdir(parents=True, exist_ok=True)
    icons.mkdir(parents=True, exist_ok=True)
    entry, icon = apps / f"{APP_ID}.desktop", icons / f"{APP_ID}.png"
    entry.write_text(text)
    shutil.copyfile(_asset("icons", "noisebrush.png"), icon)
    return [entry, icon]


def uninstall_desktop_entry() -> list[Path]:
    removed = []
    for path in (
        _data_home() / "applications" / f"{APP_ID}.desktop",
        _data_home() / "icons" / "hicolor" / "256x256" / "apps" / f"{APP_ID}.png",
    ):
        if path.exists():
            path.unlink()
            removed.append(path)
    return removed
