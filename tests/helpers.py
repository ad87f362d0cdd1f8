"""Helpers shared by the tests: a queue listener and simple drawn maps."""

from __future__ import annotations

import contextlib
import queue

import cv2
import numpy as np

from noisebrush.engine.events import Cancelled, Failed, Finished


class EventLog:
    """Collects engine events; `wait_end(job)` blocks until that job finished, failed or was cancelled."""

    def __init__(self) -> None:
        self.q: queue.Queue = queue.Queue()
        self.events: list = []

    def __call__(self, event) -> None:
        self.q.put(event)

    def wait_end(self, job: int, timeout: float = 120.0):
        while True:
            ev = self.q.get(timeout=timeout)
            self.events.append(ev)
            if getattr(ev, "job_id", None) == job and isinstance(ev, (Finished, Failed, Cancelled)):
                return ev

    def of(self, job: int, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind) and e.job_id == job]


def logged_engine(**kw):
    """An Engine whose events collect in `engine.log` (an EventLog)."""
    from noisebrush.engine.engine import Engine

    eng = Engine(preview_interval_s=0.0, **kw)
    eng.log = EventLog()
    eng.add_listener(eng.log)
    return eng


def circle_sketch(size: int = 64, radius: int | None = None, thickness: int = 3) -> np.ndarray:
    img = np.zeros((size, size, 3), np.uint8)
    cv2.circle(img, (size // 2, size // 2), radius or size // 3, (255, 255, 255), thickness)
    return img


def open_window(qtbot, tmp_path, engine=None, **kw):
    """The whole window on a settings file and data folder of the test's own, shown (offscreen)."""
    from PySide6.QtCore import QSettings

    from noisebrush.gui.app import create_main_window

    kw.setdefault("restore", "never")
    settings = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    if settings.value("packs_offered") is None:
        settings.setValue("packs_offered", True)  # a returning user: the first start's offer is tested on its own
    w = create_main_window(engine, settings=settings, data_dir=tmp_path / "data", **kw)
    qtbot.addWidget(w)
    w.resize(1100, 800)
    w.show()
    qtbot.waitExposed(w)
    return w


@contextlib.contextmanager
def project_round_trip(qtbot, tmp_path, build, through_krita: bool = False):
    """`build(window)` makes a project and returns what to compare; it is saved as .ora (rewritten as Krita would,
    when asked) and opened in a fresh window. Yields (what build returned, the new window at 128 px)."""
    from fake_backend import FakeBackend
    from test_ora_foreign import krita_round_trip

    from noisebrush.engine.engine import Engine

    a = open_window(qtbot, tmp_path / "a", Engine(FakeBackend(step_s=0.01)))
    try:
        before = build(a)
        assert a.projects.save(str(tmp_path / "p.ora"))
    finally:
        a.close()
    path = str(tmp_path / "p.ora")
    if through_krita:
        path = krita_round_trip(path, str(tmp_path / "k.ora"))
    b = open_window(qtbot, tmp_path / "b", Engine(FakeBackend(step_s=0.01)))
    try:
        with qtbot.waitSignal(b.projects.opened, timeout=10000):
            b.projects.open(path)
        b.state.update(width=128, height=128)
        yield before, b
        assert not b.banner.isVisible() or "Image layer" not in b.banner.label.text()  # not taken for pictures
    finally:
        b.close()


def add_random_lora(model, seed: int, scale: float):
    """A rank-4 peft LoRA on a UNet's or transformer's attention projections, with random up-weights of `scale`
    (a fresh LoRA's are zero: it would change nothing). Returns the model."""
    import torch
    from peft import LoraConfig

    model.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian",
                                 target_modules=["to_k", "to_q", "to_v", "to_out.0"]))  # fmt: skip
    torch.manual_seed(seed)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, scale)
    return model
