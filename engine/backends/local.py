"""The local diffusers backend: the models on this computer, run in this process by the Runner."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from noisebrush.engine.backends.base import Emit, ModelInfo
from noisebrush.engine.catalog import FAMILY_TITLES
from noisebrush.engine.device import DeviceChoice, LoadOptions
from noisebrush.engine.request import GenerationRequest

log = logging.getLogger(__name__)


def own_controlnets(folder: Path) -> tuple[str, ...]:
    """The kinds a model folder ships a ControlNet for (controlnets/<kind>/, as the embedded model does)."""
    from noisebrush.engine.controls import kind_names
    from noisebrush.engine.models import CONTROLNETS_DIR

    return tuple(k for k in kind_names() if (folder / CONTROLNETS_DIR / k).is_dir())


class LocalBackend:
    """Cheap to build on any thread; torch and diffusers load on the engine thread at the first job or preload.

    Until the Runner is built, the embedded model's plain requests run on the quick start (engine/quick_start.py),
    which needs torch alone: a fresh window shows its first frame seconds sooner. With `warm_up`, the first quick
    job then builds the Runner and loads the embedded model on a background thread, so that everything after it
    (regions, references, other models) does not wait for diffusers; the Runner takes every job once it is built.
    """

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
        quick_start: bool = True,
        warm_up: bool = False,
    ) -> None:
        self.preview_interval_s = preview_interval_s
        self.previews = previews
        self.models_folder = models_folder
        self._threads = threads
        self._device = device
        self._options = options or LoadOptions()
        self._quick_start = quick_start
        self._warm_up = warm_up
        self._runner = None  # set once built (and, when warming up, once the embedded model is loaded)
        self._building = threading.Lock()
        self._quick = None
        self._warming: threading.Thread | None = None

    def _new_runner(self):
        from noisebrush.engine.device import set_torch_threads
        from noisebrush.engine.models import ModelManager
        from noisebrush.engine.quiet import quiet_libraries
        from noisebrush.engine.runner import Runner

        quiet_libraries()
        set_torch_threads(self._threads)
        return Runner(ModelManager(self._device_choice(), self._options), self.preview_interval_s, self.previews)

    def _device_choice(self) -> DeviceChoice:
        """Chosen once: every live frame asks (through quick_refusal), and probing CUDA each time is wasted work."""
        if self._device is None:
            from noisebrush.engine.device import choose

            self._device = choose(self._options)
        return self._device

    def _get_runner(self):
        with self._building:  # waits for a warm-up under way
            if self._runner is None:
                self._runner = self._new_runner()
            return self._runner

    def _quick_runner(self, request: GenerationRequest | None):
        """The quick start while the Runner is not built, for a request it runs exactly (None: a preload of the
        embedded model); None otherwise."""
        if not self._quick_start or self._runner is not None:
            self._quick = None  # the Runner takes every job from now on: free the quick weights
            return None
        from noisebrush.engine.device import set_torch_threads
        from noisebrush.engine.quick_start import QuickRunner, quick_refusal

        probe = request if request is not None else GenerationRequest("")
        if quick_refusal(probe, self._device_choice(), self._options) is not None:
            return None
        if self._quick is None:
            set_torch_threads(self._threads)
            quick = QuickRunner(self.preview_interval_s, self.previews)
            try:
                quick.load()
            except Exception as exc:  # a damaged install: the Runner's loaders say what is wrong, in one sentence
                log.warning("quick start unavailable: %s", exc)
                self._quick_start = False
                return None
            self._quick = quick
        return self._quick

    def _warm(self) -> None:
        with self._building:
            if self._runner is None:
                runner = self._new_runner()
                try:
                    runner.models.get("")
                except Exception:  # the job that needs it will say why
                    pass
                self._runner = runner

    def run(self, job_id: int, request: GenerationRequest, emit: Emit, cancelled: threading.Event) -> None:
        quick = self._quick_runner(request)
        if quick is None:
            self._get_runner().run(job_id, request, emit, cancelled)
            return
        try:
            quick.run(job_id, request, emit, cancelled)
        finally:
            if self._warm_up and self._warming is None:
                self._warming = threading.Thread(target=self._warm, name="noisebrush-warm-up", daemon=True)
                self._warming.start()

    def preload(self, model: str) -> None:
        if model != "" or self._quick_runner(None) is None:  # the quick start loads its weights when made
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
        if self._warming is not None:
            self._warming.join()  # not mid-import when the interpreter exits
        self._runner = self._quick = None
