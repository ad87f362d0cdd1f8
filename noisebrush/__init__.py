"""Noisebrush: draw with a diffusion model. This package holds only the version and the CLI entry point."""

__version__ = "0.1.0"
