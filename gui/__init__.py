"""Noisebrush's PySide6 desktop app."""
