"""The Engine's policy (ids, latest-wins, cancel, listeners) over the Backend protocol, with a scripted backend."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from fake_backend import FakeBackend
from helpers import EventLog

from noisebrush.engine.backends.base import Backend
from noisebrush.engine.engine import Engine
from noisebrush.engine.events import Cancelled, Failed, Finished, Preview, Started
from noisebrush.engine.request import GenerationRequest

ROOT = Path(__file__).resolve().parent.parent


def run_engine(backend: FakeBackend) -> Engine:
    eng = Engine(backend)
    eng.log = EventLog()
    eng.add_listener(eng.log)
    return eng


def test_the_fake_and_the_local_backend_both_satisfy_the_protocol():
    from noisebrush.engine.backends.local import LocalBackend

    assert isinstance(FakeBackend(), Backend) and isinstance(LocalBackend(), Backend)


def test_a_job_runs_through_the_backend_with_every_event():
    backend = FakeBackend()
    with run_engine(backend) as eng:
        job = eng.submit(GenerationRequest("x", steps=3, width=64, height=64, seed=5))
        end = eng.log.wait_end(job, timeout=10)
        assert isinstance(end, Finished) and end.params.seed == 5
        assert [p.step for p in eng.log.of(job, Preview)] == [1, 2, 3] and eng.log.of(job, Started)
        bad = eng.submit(GenerationRequest("x", model="broken", width=64, height=64))
        assert eng.log.wait_end(bad, timeout=10).message == "the model broken cannot be loaded"
    assert backend.closed  # the engine closes its backend on shutdown


def test_latest_wins_stops_the_running_job_within_a_step_and_drops_the_queued_one():
    backend = FakeBackend(step_s=0.02)
    with run_engine(backend) as eng:
        first = eng.submit(GenerationRequest("a", steps=200, width=64, height=64))
        queued = eng.submit(GenerationRequest("b", steps=200, width=64, height=64))
        while not eng.log.of(first, Preview):
            eng.log.events.append(eng.log.q.get(timeout=10))
        last = eng.submit(GenerationRequest("c", steps=2, width=64, height=64), latest_wins=True)
        assert isinstance(eng.log.wait_end(last, timeout=10), Finished)
    ends = {e.job_id: e for e in eng.log.events if isinstance(e, (Cancelled, Failed, Finished))}
    assert isinstance(ends[first], Cancelled) and ends[first].at_step < 200
    assert isinstance(ends[queued], Cancelled) and ends[queued].at_step == 0
    assert [r.prompt for r in backend.requests] == ["a", "c"]


def test_the_engine_and_a_backend_user_import_no_torch_or_diffusers():
    code = (
        "import sys; sys.path.insert(0, 'tests')\n"
        "from fake_backend import FakeBackend\n"
        "from noisebrush.engine.engine import Engine\n"
        "from noisebrush.engine.request import GenerationRequest\n"
        "import queue; q = queue.Queue()\n"
        "with Engine(FakeBackend()) as e:\n"
        "    e.add_listener(q.put); j = e.submit(GenerationRequest('x', steps=2, width=64, height=64))\n"
        "    while type(q.get(timeout=10)).__name__ != 'Finished': pass\n"
        "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
