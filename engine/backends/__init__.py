"""Backends run one job each for the Engine: the local diffusers backend, and others behind the same protocol."""
