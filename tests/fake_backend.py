"""A scripted Backend for tests: no torch, no diffusers. Each step emits a preview; the result's grey level is the
mean of the first control map, so a test can see that what was drawn reached the request."""

from __future__ import annotations

import threading
import time

import numpy as np

from noisebrush.engine.backends.base import ModelInfo, Stopped
from noisebrush.engine.errors import UserError
from noisebrush.engine.events import Finished, Preview
from noisebrush.engine.request import GenerationRequest


class FakeBackend:
    name = "fake"

    def __init__(self, step_s: float = 0.005) -> None:
        self.step_s = step_s
        self.requests: list[GenerationRequest] = []
        self.preloaded: list[str] = []
        self.closed = False

    def run(self, job_id: int, request: GenerationRequest, emit, cancelled: threading.Event) -> None:
        request.validate()
        if request.model == "broken":
            raise UserError("the model broken cannot be loaded")
        self.requests.append(request)
        grey = int(request.controls[0].image.mean()) if request.controls else 0
        image = np.full((request.height, request.width, 3), grey, np.uint8)
        t0 = time.perf_counter()
        for step in range(1, request.steps + 1):
            time.sleep(self.step_s)
            if cancelled.is_set():
                raise Stopped(step)
            emit(Preview(job_id, step, request.steps, image[::8, ::8].copy(), time.perf_counter() - t0))
        seed = request.seed if request.seed is not None else 7
        emit(Finished(job_id, image, request.replace(seed=seed), time.perf_counter() - t0, "fake-model"))

    def preload(self, model: str) -> None:
        self.preloaded.append(model)

    def list_models(self, folder: str | None = None) -> list[ModelInfo]:
        return [ModelInfo("", "Fake default", "base", "sd15", control_kinds=("scribble", "depth", "pose"), source=self.name),
                ModelInfo("fake-canny", "Fake canny", "controlnet", "sd15", "canny", source=self.name),
                ModelInfo("/loras/style-a.safetensors", "style-a · SD1.5", "lora", "sd15", source=self.name)]  # fmt: skip

    def close(self) -> None:
        self.closed = True
