"""The ComfyUI backend against real ComfyUI servers (the vendored 0.3.64, on 127.0.0.1 with --cpu).

The first run unpacks ComfyUI, makes its venv and writes a random SD1.5-shaped checkpoint (about 30 s here);
later runs reuse them from .cache/comfyui/. Each server starts in about 5 s and runs 6 steps at 64 px in about 1.5 s.
"""

import queue
import subprocess
import sys
import time

import numpy as np
import pytest
from comfy_server import CHECKPOINT, CONTROLNET, LORA, ComfyServer, prepare, vendored_source
from PIL import Image

from noisebrush.engine.backends.comfy import ComfyBackend
from noisebrush.engine.engine import Engine
from noisebrush.engine.errors import UserError
from noisebrush.engine.events import Cancelled, Failed, Finished, Preview, Progress, Started
from noisebrush.engine.metadata import read_saved
from noisebrush.engine.request import ControlSpec, GenerationRequest, LoraSpec

if vendored_source() is None:
    pytest.skip("the vendored ComfyUI source (../shared/vendor/ComfyUI-*.tar.gz) is not on this machine",
                allow_module_level=True)  # fmt: skip


@pytest.fixture(scope="session")
def comfy_install():
    return prepare()


def _start(install, name: str) -> ComfyServer:
    server = ComfyServer(*install, name)
    try:
        server.wait_ready()
    except Exception:
        server.stop()
        raise
    return server


@pytest.fixture(scope="module")
def server(comfy_install):
    s = _start(comfy_install, "a")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def second_server(comfy_install):
    s = _start(comfy_install, "b")
    yield s
    s.stop()


def square(lo: int = 16, hi: int = 48) -> np.ndarray:
    img = np.zeros((64, 64, 3), np.uint8)
    img[lo:hi, lo] = img[lo:hi, hi] = img[lo, lo:hi] = img[hi, lo:hi] = 255
    return img


def request(**kw) -> GenerationRequest:
    base = dict(prompt="a red square", model=CHECKPOINT, steps=6, width=64, height=64, seed=7,
                controls=(ControlSpec("scribble", square()),))  # fmt: skip
    return GenerationRequest(**{**base, **kw})


class Recorder:
    def __init__(self, engine: Engine) -> None:
        self.events: queue.Queue = queue.Queue()
        self.seen: list = []
        engine.add_listener(self.events.put)

    def until_done(self, ids: list[int], timeout: float = 120.0) -> dict[int, object]:
        """job id → its last event (Finished, Failed or Cancelled)."""
        ends: dict[int, object] = {}
        deadline = time.monotonic() + timeout
        while set(ids) - set(ends):
            ev = self.events.get(timeout=max(0.1, deadline - time.monotonic()))
            self.seen.append(ev)
            if isinstance(ev, Finished | Failed | Cancelled) and ev.job_id in ids:
                ends[ev.job_id] = ev
        return ends

    def of(self, job: int, kind: type) -> list:
        return [e for e in self.seen if isinstance(e, kind) and e.job_id == job]


def test_a_scribble_runs_on_the_server_with_a_preview_every_step(server):
    with Engine(ComfyBackend([server.url])) as engine:
        rec = Recorder(engine)
        job = engine.submit(request())
        end = rec.until_done([job])[job]
    assert isinstance(end, Finished), end
    assert end.image.shape == (64, 64, 3) and end.image.std() > 1
    assert [p.step for p in rec.of(job, Preview)] == [1, 2, 3, 4, 5, 6]
    assert all(p.total == 6 and p.image.ndim == 3 for p in rec.of(job, Preview))
    assert rec.of(job, Started) and server.url.split("//")[1] in end.model_name


def test_regions_run_on_the_server_and_change_the_picture_where_they_are(server):
    """Issue 26 on ComfyUI: one masked conditioning per region (core nodes only); the server finishes the job, and
    a region's prompt changes the picture inside its mask more than outside."""
    from noisebrush.engine.composition import Region

    left = np.zeros((64, 64), np.uint8)
    left[:, :32] = 255
    plain = request(controls=(), prompt="a stone wall")
    with_region = plain.replace(regions=(Region(left, "a bright orange sunset sky over the sea"),))
    with Engine(ComfyBackend([server.url])) as engine:
        rec = Recorder(engine)
        jobs = [engine.submit(plain), engine.submit(with_region)]
        ends = rec.until_done(jobs)
    a, b = (ends[j] for j in jobs)
    assert isinstance(a, Finished) and isinstance(b, Finished), (a, b)
    diff = np.abs(a.image.astype(float) - b.image.astype(float)).mean(axis=2)
    assert diff[:, :24].mean() > diff[:, 40:].mean(), (diff[:, :24].mean(), diff[:, 40:].mean())


def test_a_reference_on_a_server_without_the_ipadapter_pack_fails_before_queueing(server):
    """Issue 27 on ComfyUI: the vendored server has no IPAdapter pack; the job fails with one line naming it, and
    nothing reaches the server's queue or input folder."""
    from noisebrush.engine.composition import Reference

    before = set(server.input_dir.iterdir()) if server.input_dir.is_dir() else set()
    with Engine(ComfyBackend([server.url])) as engine:
        rec = Recorder(engine)
        job = engine.submit(request(references=(Reference(square(), 0.8, "style"),)))
        end = rec.until_done([job])[job]
    assert isinstance(end, Failed) and "lacks the ComfyUI IPAdapter node pack" in end.message, end
    assert "\n" not in end.message and not rec.of(job, Preview)
    assert (set(server.input_dir.iterdir()) if server.input_dir.is_dir() else set()) == before  # nothing uploaded
    (line,) = ComfyBackend([server.url]).server_info()
    assert line.endswith("no reference pictures (it lacks the IPAdapter node pack)")


def test_the_same_seed_gives_the_same_picture_and_the_sketch_steers_it(server):
    backend = ComfyBackend([server.url])
    with Engine(backend) as engine:
        rec = Recorder(engine)
        moved_sketch = (ControlSpec("scribble", square(4, 30)),)
        ids = [engine.submit(request()), engine.submit(request()), engine.submit(request(controls=moved_sketch))]
        ends = rec.until_done(ids)
    a, b, moved = (ends[i].image.astype(int) for i in ids)
    assert np.array_equal(a, b)
    assert np.abs(a - moved).mean() > 0.3  # another sketch, another picture (random weights: a small change)


def test_cli_writes_previews_and_a_png_that_reopens_with_its_settings(server, tmp_path):
    Image.fromarray(square()).save(tmp_path / "scribble.png")
    out = tmp_path / "out.png"
    proc = subprocess.run(
        [sys.executable, "-m", "noisebrush", "generate", "--server", server.url, "--model", CHECKPOINT,
         "--prompt", "a red square", "--control", f"scribble={tmp_path / 'scribble.png'}", "--steps", "6",
         "--width", "64", "--height", "64", "--seed", "11", "--lora", f"{LORA}@0.5",
         "--previews", str(tmp_path / "steps"), "--out", str(out)],
        capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "steps").iterdir()) == [f"step_{i:03d}.png" for i in range(1, 7)]
    saved, _ = read_saved(out)
    assert (saved.prompt, saved.seed, saved.steps, saved.model) == ("a red square", 11, 6, CHECKPOINT)
    assert saved.loras == (LoraSpec(LORA, 0.5),) and saved.controls[0].kind == "scribble"
    assert "on 127.0.0.1" in proc.stdout


def test_a_lora_changes_the_picture_and_inpainting_keeps_the_unmasked_pixels(server):
    init = np.full((64, 64, 3), 90, np.uint8)
    mask = np.zeros((64, 64), np.uint8)
    mask[:, 32:] = 255
    with Engine(ComfyBackend([server.url])) as engine:
        rec = Recorder(engine)
        ids = [engine.submit(request(loras=(LoraSpec(LORA, 1.0),))), engine.submit(request()),
               engine.submit(request(init_image=init, mask=mask, strength=1.0))]  # fmt: skip
        ends = rec.until_done(ids)
    with_lora, plain, inpainted = (ends[i].image for i in ids)
    assert np.abs(with_lora.astype(int) - plain).mean() > 1
    assert np.array_equal(inpainted[:, :32], init[:, :32]) and not np.array_equal(inpainted[:, 32:], init[:, 32:])


def test_cancel_mid_job_frees_the_server_for_the_next_one(server):
    with Engine(ComfyBackend([server.url])) as engine:
        rec = Recorder(engine)
        long_job = engine.submit(request(steps=60))
        deadline = time.monotonic() + 60
        while not rec.of(long_job, Preview) and time.monotonic() < deadline:
            rec.seen.append(rec.events.get(timeout=60))
        t0 = time.monotonic()
        nxt = engine.submit(request(steps=4), latest_wins=True)  # as live mode does: the newer one wins
        ends = rec.until_done([long_job, nxt])
        waited = time.monotonic() - t0
    assert isinstance(ends[long_job], Cancelled) and ends[long_job].at_step < 60
    assert isinstance(ends[nxt], Finished)
    # the stale job stopped within a step or so: the new one did not wait for the remaining ~50 steps
    assert waited < 25, f"the next job took {waited:.1f} s"


def test_two_servers_split_a_batch_of_four(server, second_server):
    with Engine(ComfyBackend([server.url, second_server.url])) as engine:
        rec = Recorder(engine)
        ids = [engine.submit(request(seed=s)) for s in range(4)]
        ends = rec.until_done(ids, timeout=180)
    assert all(isinstance(e, Finished) for e in ends.values()), ends
    used = {e.model_name.split(" on ")[1] for e in ends.values()}
    assert len(used) == 2, used
    assert [ends[i].params.seed for i in ids] == [0, 1, 2, 3]


def test_a_server_that_dies_mid_job_hands_its_jobs_to_another(comfy_install, server):
    victim = _start(comfy_install, "victim")
    try:
        with Engine(ComfyBackend([victim.url, server.url])) as engine:
            rec = Recorder(engine)
            ids = [engine.submit(request(seed=s, steps=30)) for s in range(4)]
            # the victim is listed first, so with both idle it takes the first job; the second goes to the other
            while sum(1 for e in rec.seen if isinstance(e, Preview)) < 2:
                rec.seen.append(rec.events.get(timeout=120))
            victim.kill()
            ends = rec.until_done(ids, timeout=240)
    finally:
        victim.stop()
    assert all(isinstance(e, Finished) for e in ends.values()), ends
    assert any(isinstance(e, Progress) and "stopped answering" in e.message for e in rec.seen)


def test_a_dead_server_a_bad_address_and_a_missing_model_are_one_line_errors(comfy_install, server):
    victim = _start(comfy_install, "lonely")
    with Engine(ComfyBackend([victim.url])) as engine:
        rec = Recorder(engine)
        job = engine.submit(request(steps=200))
        while not rec.of(job, Preview):
            rec.seen.append(rec.events.get(timeout=120))
        victim.kill()
        end = rec.until_done([job])[job]
    victim.stop()
    assert isinstance(end, Failed) and victim.url.split("//")[1] in end.message and "\n" not in end.message

    with Engine(ComfyBackend(["http://127.0.0.1:9"], timeout_s=2)) as engine:  # nothing listens on port 9
        rec = Recorder(engine)
        job = engine.submit(request())
        end = rec.until_done([job])[job]
    assert isinstance(end, Failed) and "127.0.0.1:9 does not answer" in end.message

    with Engine(ComfyBackend([server.url])) as engine:
        rec = Recorder(engine)
        job = engine.submit(request(model="sdxl_base.safetensors"))
        end = rec.until_done([job])[job]
    assert isinstance(end, Failed) and "has no checkpoint named 'sdxl_base.safetensors'" in end.message
    with pytest.raises(UserError, match="not a server address"):
        ComfyBackend(["ftp://example.com"])


def test_the_model_list_and_server_test_say_what_each_server_has(server):
    backend = ComfyBackend([server.url])
    models = {(m.role, m.ref): m for m in backend.list_models()}
    assert ("base", CHECKPOINT) in models and ("lora", LORA) in models
    assert models[("controlnet", CONTROLNET)].control_kind == "scribble"
    assert models[("base", CHECKPOINT)].source == server.url.split("//")[1]
    (line,) = backend.server_info()
    assert line.startswith("✓") and "ComfyUI 0.3.64" in line and f"1 checkpoint, 1 ControlNet, 1 LoRA ({CHECKPOINT})" in line


def test_the_window_switched_to_a_server_paints_its_previews_on_the_canvas(server, qtbot, tmp_path):
    from fake_backend import FakeBackend
    from helpers import open_window
    from test_gui import stroke

    from noisebrush.gui.document import qimage_to_rgba
    from noisebrush.gui.engine_settings import EngineChoice

    w = open_window(qtbot, tmp_path, Engine(FakeBackend(step_s=0.01)))
    try:
        dlg = w.engine_dialog()
        dlg.servers.setChecked(True)
        dlg.urls.setPlainText(server.url)
        with qtbot.waitSignal(dlg.test().done, timeout=30000):
            pass
        assert "ComfyUI 0.3.64" in dlg.report.text()
        with qtbot.waitSignal(w.files.models_scanned, timeout=30000):
            dlg.accept()
        qtbot.waitUntil(lambda: w.state.settings.model == CHECKPOINT, timeout=5000)
        assert EngineChoice.load(w.settings) == EngineChoice(True, (server.url,))  # kept for the next start
        w.state.update(width=64, height=64, steps=6)
        stroke(w.canvas, [(0.3, 0.3), (0.7, 0.7)])
        shown = []
        w.bridge.preview.connect(lambda job, step, *a: shown.append((step, qimage_to_rgba(w.canvas.result).copy())))
        with qtbot.waitSignal(w.bridge.finished, timeout=120000):
            w.generate_action.trigger()
        assert len(shown) >= 2 and shown[-1][0] == 6  # coalesced on the GUI thread, but the last step always shows
        assert w.state.history[0].model_name.startswith(CHECKPOINT)
        assert not w.canvas.result_is_preview
    finally:
        w.close()


def test_started_with_servers_saved_the_window_uses_their_model(server, qtbot, tmp_path):
    from PySide6.QtCore import QSettings

    from noisebrush.gui.app import create_main_window
    from noisebrush.gui.engine_settings import EngineChoice

    settings = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    EngineChoice(True, (server.url,)).save(settings)
    w = create_main_window(settings=settings, data_dir=tmp_path / "data", restore="never")
    qtbot.addWidget(w)
    try:
        qtbot.waitUntil(lambda: w.state.settings.model == CHECKPOINT, timeout=30000)
        assert w.panel.model.currentData() == CHECKPOINT  # the picker shows it, not "Embedded default"
        assert w.bridge.engine.backend.servers == [server.url.split("//")[1]]
    finally:
        w.close()


def test_a_token_is_nowhere_but_the_secret_store_after_a_run(server, qtbot, tmp_path, caplog, capfd):
    """Issue 31: after generating on a server with a token, saving the picture and the project, an autosave and a
    failed job, no file the app wrote, no log line and no message carries the token."""
    import logging

    from fake_backend import FakeBackend
    from helpers import open_window
    from test_gui import stroke

    from noisebrush.gui.engine_settings import EngineChoice, secret_store

    token = "nb-secret-" + "7c2d" * 8
    caplog.set_level(logging.DEBUG)
    w = open_window(qtbot, tmp_path, Engine(FakeBackend(step_s=0.01)))
    messages: list[str] = []
    try:
        w.engine_switcher.error.connect(messages.append)
        w.bridge.failed.connect(lambda job, msg: messages.append(msg))
        with qtbot.waitSignal(w.files.models_scanned, timeout=30000):
            w.engine_switcher.apply(EngineChoice(True, (server.url,), token))
        qtbot.waitUntil(lambda: w.state.settings.model == CHECKPOINT, timeout=5000)
        w.state.update(width=64, height=64, steps=3)
        stroke(w.canvas, [(0.3, 0.3), (0.7, 0.7)])
        with qtbot.waitSignal(w.bridge.finished, timeout=120000):
            w.generate_action.trigger()
        assert w.files.save_result(str(tmp_path / "out.png"))
        assert w.projects.save(str(tmp_path / "out.ora"))
        w.autosave_now()
        w.state.update(model="no-such-checkpoint.safetensors")  # a failed job: its message must not carry it either
        with qtbot.waitSignal(w.bridge.failed, timeout=60000):
            w.generate_action.trigger()
        w.settings.sync()
        assert secret_store(w.settings).get("comfyui-token") == token  # kept, but only there
    finally:
        w.close()
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "secrets.json"]
    assert any(p.suffix == ".ora" for p in written) and any("history" in p.parts for p in written)
    leaks = [str(p) for p in written if token.encode() in p.read_bytes()]
    out, err = capfd.readouterr()
    assert leaks == [] and token not in caplog.text and token not in out + err
    assert messages and not any(token in m for m in messages)


def tiled_request(**kw) -> GenerationRequest:
    from noisebrush.engine.composition import Tiling

    picture = np.zeros((64, 64, 3), np.uint8)
    picture[:, :, 2] = 180
    picture[16:48, 16:48] = (200, 40, 30)
    base = dict(prompt="a red square", model=CHECKPOINT, steps=6, width=128, height=128, seed=3, strength=0.5,
                init_image=picture, tiling=Tiling(tile=64, overlap=16))  # fmt: skip
    return GenerationRequest(**{**base, **kw})


def test_two_servers_share_the_tiles_of_one_picture(server, second_server):
    with Engine(ComfyBackend([server.url, second_server.url])) as engine:
        rec = Recorder(engine)
        job = engine.submit(tiled_request())
        end = rec.until_done([job], timeout=240)[job]
    assert isinstance(end, Finished), end
    assert end.image.shape == (128, 128, 3)
    sent_to = {e.message.rsplit(" ", 1)[-1] for e in rec.of(job, Progress) if "sending the job to" in e.message}
    assert sent_to == {server.url.split("//")[1], second_server.url.split("//")[1]}, sent_to
    boxes = {e.box for e in rec.of(job, Preview)} - {None}
    assert len(boxes) == 9  # every 64 px tile of the 128 px picture streamed into its place


def test_a_server_that_dies_during_a_tiled_refine_has_its_tiles_resent(comfy_install, server):
    victim = _start(comfy_install, "tile-victim")
    try:
        with Engine(ComfyBackend([victim.url, server.url])) as engine:
            rec = Recorder(engine)
            job = engine.submit(tiled_request(steps=30))
            while sum(1 for e in rec.seen if isinstance(e, Preview) and e.box) < 2:
                rec.seen.append(rec.events.get(timeout=120))
            victim.kill()
            end = rec.until_done([job], timeout=300)[job]
    finally:
        victim.stop()
    assert isinstance(end, Finished), end
    assert any(isinstance(e, Progress) and "stopped answering" in e.message for e in rec.seen)
