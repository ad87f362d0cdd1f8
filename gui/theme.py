"""Light (the platform's) or dark theme: Fusion with a dark palette, as artists' tools usually offer."""

from __future__ import annotations

from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication, QStyleFactory

_platform: tuple[str, QPalette] | None = None  # what the app had before the first change, to go back to


def apply_theme(dark: bool) -> None:
    global _platform
    app = QApplication.instance()
    if app is None:
        return
    if _platform is None:
        _platform = (app.style().name(), QPalette(app.palette()))
    if not dark:
        app.setStyle(QStyleFactory.create(_platform[0]))
        app.setPalette(_platform[1])
        return
    app.setStyle(QStyleFactory.create("Fusion"))
    p = QPalette()
    role = QPalette.ColorRole
    for r, c in ((role.Window, (45, 46, 50)), (role.WindowText, (225, 225, 228)), (role.Base, (32, 33, 36)),
                 (role.AlternateBase, (45, 46, 50)), (role.ToolTipBase, (45, 46, 50)), (role.ToolTipText, (225, 225, 228)),
                 (role.Text, (225, 225, 228)), (role.Button, (55, 56, 61)), (role.ButtonText, (225, 225, 228)),
                 (role.Highlight, (66, 133, 244)), (role.HighlightedText, (255, 255, 255)), (role.Link, (110, 170, 255)),
                 (role.PlaceholderText, (140, 140, 145))):  # fmt: skip
        p.setColor(r, QColor(*c))
    for r in (role.Text, role.ButtonText, role.WindowText):
        p.setColor(QPalette.ColorGroup.Disabled, r, QColor(120, 120, 125))
    app.setPalette(p)
