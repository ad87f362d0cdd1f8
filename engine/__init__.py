"""Noisebrush's engine: requests, model loading, the diffusion runner and its thread. Never imports Qt."""
