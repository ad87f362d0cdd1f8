"""Training of Noisebrush's embedded default model on a procedural world."""
