import os
import sys
import threading
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Tokens saved by tests go to a file in the test's own folder, never into the keyring of the person running them
os.environ["PYTHON_KEYRING_BACKEND"] = "keyring.backends.fail.Keyring"
sys.path.insert(0, str(Path(__file__).parent))

from tiny_model import write_model_folder  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """A tiny seeded SD1.5-shaped model folder with scribble, depth and pose ControlNets."""
    return str(write_model_folder(tmp_path_factory.mktemp("models") / "tiny"))


@pytest.fixture(autouse=True)
def no_leaked_threads():
    """Fail a test that leaves an engine thread (or a QThread) running: it would crash later tests."""
    before = set(threading.enumerate())
    yield
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive() and t.name.startswith("noisebrush")]
    for t in leaked:
        t.join(5)
    still = [t.name for t in leaked if t.is_alive()]
    assert not still, f"threads left running: {still}"


@pytest.fixture
def fake_window(qtbot, tmp_path):
    """The whole window on a scripted backend (no torch, no diffusers); `window.backend` is the backend."""
    from fake_backend import FakeBackend
    from helpers import open_window

    from noisebrush.engine.engine import Engine

    backend = FakeBackend(step_s=0.01)
    w = open_window(qtbot, tmp_path, Engine(backend), live_debounce_ms=30)
    w.backend = backend
    yield w
    w.close()


@pytest.fixture
def lonely_folder(tmp_path, monkeypatch) -> Path:
    """An empty folder with no diffusers folder anywhere a transformer-only file looks for a companion (its folder,
    its parent, the models folder, folders scanned before, the Hugging Face cache): see engine/companions.py."""
    import huggingface_hub.constants

    from noisebrush.engine import companions

    monkeypatch.setenv("NOISEBRUSH_MODELS", str(tmp_path / "no-models"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "no-hub"))
    monkeypatch.setattr(companions, "_scanned_roots", [])
    folder = tmp_path / "downloads" / "models"
    folder.mkdir(parents=True)
    return folder


@pytest.fixture
def servers():
    """Start fake HTTP(S) servers on 127.0.0.1 (tests/fake_servers.py): servers(**kw) -> FakeServer; all stop after."""
    from fake_servers import FakeServer

    started: list = []

    def start(**kw):
        started.append(FakeServer(**kw))
        return started[-1]

    yield start
    for s in started:
        s.stop()
