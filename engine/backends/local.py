"""The local diffusers backend: the models on this computer, run in this process by the Runner."""

from __future__ import annotations

import threading
from pathlib import Path

from noisebrush.engine.backends.base import Emit, ModelInfo
from noisebrush.engine.catalog import FAMILY_TITLES
from noisebrush.engine.device import DeviceChoice, LoadOptions
from noisebrush.engine.request import GenerationRequest


def own_controlnets(folder: Path) -> tuple[str, ...]:
    """The kinds a model folder ships a ControlNet for (controlnets/<kind>/, as the embedded model does)."""
    from noisebrush.engine.controls import kind_names
    from noisebrush.engine.models import CONTROLNETS_DIR

    return tuple(k for k in kind_names() if (folder / CONTROLNETS_DIR / k).is_dir())


class LocalBackend:
    """Cheap to build on any thread; torch and diffusers load on the engine thread at the first job or preload."""

    name = "local"

    def __init__(
        self,
        *,
        preview_interval_s: float = 1 / 30,
        previews: bool = True,
        threads: int | None = None,
        device: DeviceChoice | None = None,
        options: LoadOptions | None = None,
        models_folder: str | Path | None = None,
    ) -> None:
        self.preview_interval_s = preview_interval_s
        self.previews = previews
        self.models_folder = models_folder
        self._threads = threads
        self._device = device
        self._options = options or LoadOptions()
        self._runner = None

    def _get_runner(self):
        if self._runner is None:
            from noisebrush.engine.device import choose, set_torch_threads
            from noisebrush.engine.models import ModelManager
            from noisebrush.engine.quiet import quiet_libraries
            from noisebrush.engine.runner import Runner

            quiet_libraries()
            set_torch_threads(self._threads)
            device = self._device or choose(self._options)
            self._runner = Runner(ModelManager(device, self._options), self.preview_interval_s, self.previews)
        return self._runner

    def run(self, job_id: int, request: GenerationRequest, emit: Emit, cancelled: threading.Event) -> None:
        self._get_runner().run(job_id, request, emit, cancelled)

    def preload(self, model: str) -> None:
        self._get_runner().models.get(model)

    def list_models(self, folder: str | None = None) -> list[ModelInfo]:
        from noisebrush.engine.catalog import scan
        from noisebrush.engine.memory import footprint
        from noisebrush.engine.paths import default_model_dir

        folder = folder or self.models_folder
        found = [ModelInfo("", "Embedded default (128 px)", "base", "sd15", control_kinds=own_controlnets(default_model_dir()))]
        for e in scan(Path(folder) if folder else None):
            if e.usable:
                size = f"{e.size_bytes / 1e9:.1f} GB" if e.size_bytes >= 1e9 else f"{e.size_bytes / 1e6:.0f} MB"
                title = f"{e.name} · {FAMILY_TITLES.get(e.family, '?')} · {size}"
                need = footprint(e.path, e.family, e.companion) if e.role == "base" else None
                title += f" · {need.describe()}" if need else ""  # GPU memory at 16 bits, default size
                title += f" · {e.detail}" if e.detail else ""  # a transformer-only file's text encoders and VAE
                kinds = own_controlnets(e.path) if e.role == "base" and e.path.is_dir() else None
                found.append(ModelInfo(str(e.path), title, e.role, e.family, e.control_kind, kinds))
        return found

    def close(self) -> None:
        self._runner = None
