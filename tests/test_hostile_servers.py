"""Servers that lie, stall or flood (issue 31, part 2): each case ends in one sentence within its timeout, with
memory bounded (32 MB for a JSON answer or a websocket message), and the engine and other servers go on.

The fakes are local HTTP servers on 127.0.0.1 (tests/fake_servers.py) whose loops stop with the test.
"""

import io
import json
import struct
import time
import tracemalloc

import numpy as np
import pytest
from fake_servers import PROMPT_ID, FakeServer, ws_frame
from PIL import Image

from noisebrush.engine.backends.comfy import ComfyBackend
from noisebrush.engine.backends.comfy_client import MAX_FRAME_BYTES, ComfyClient, ServerConfig
from noisebrush.engine.backends.comfy_workflow import OUTPUT_NODE
from noisebrush.engine.engine import Engine
from noisebrush.engine.errors import UserError
from noisebrush.engine.events import Failed, Finished
from noisebrush.engine.request import GenerationRequest


def _png(w: int = 64, h: int = 64) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((h, w, 3), 90, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _request() -> GenerationRequest:
    return GenerationRequest(prompt="a fox", model="fake.safetensors", width=64, height=64, steps=2, seed=1)


def _event(kind: str, **data) -> str:
    return json.dumps({"type": kind, "data": {"prompt_id": PROMPT_ID, **data}})


def good_job(write, stopping) -> None:
    """A job as ComfyUI runs it: progress with a preview per step, then the end."""
    for step in (1, 2):
        write(ws_frame(_event("progress", value=step, max=2)))
        write(ws_frame(struct.pack(">II", 1, 2) + _png(8, 8)))
    write(ws_frame(_event("executing", node=None)))
    stopping.wait(1)


def good_server(start) -> FakeServer:
    server = start(ws_script=good_job)
    server.answers = dict(server.answers)
    server.answers[f"/history/{PROMPT_ID}"] = {PROMPT_ID: {"outputs": {OUTPUT_NODE: {"images": [
        {"filename": "out.png", "subfolder": "", "type": "output"}]}}}}  # fmt: skip
    server.answers["/view"] = _png()
    return server


def _fails_within(seconds: float, fn, match: str) -> str:
    t0 = time.monotonic()
    with pytest.raises(UserError) as caught:
        fn()
    assert time.monotonic() - t0 < seconds
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message and "Exception" not in message
    assert match in message, message
    return message


def test_a_fake_server_runs_a_job_end_to_end(servers):
    """The fake is faithful enough that the cases below fail for their own reason."""
    server = good_server(servers)
    events = []
    ComfyBackend([server.url], timeout_s=5).run(1, _request(), events.append, __import__("threading").Event())
    finished = [e for e in events if isinstance(e, Finished)]
    assert finished and finished[0].image.shape == (64, 64, 3)


@pytest.mark.parametrize("answer, match", [
    (b"x" * (100 << 20), "more than 32 MB"),  # a 100 MB /object_info
    (b"{not json", "not JSON"),
    (b"[" * 200_000 + b"]" * 200_000, "not JSON"),  # nested past the parser's recursion limit
    (json.dumps({"KSampler": {"input": "surprise"}}).encode(), "unlike ComfyUI's"),
])  # fmt: skip
def test_object_info_that_is_huge_broken_or_deep_is_one_sentence(servers, answer, match):
    server = servers()
    server.answers = dict(server.answers, **{"/object_info/KSampler": answer})
    tracemalloc.start()
    try:
        _fails_within(20, ComfyClient(ServerConfig(server.url), timeout_s=5).models, match)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 80 << 20  # the 32 MB cap read once, plus the parser's copies


def test_an_answer_trickled_a_byte_a_second_gives_up_by_its_deadline(servers):
    server = servers(slow={"/system_stats": 0.5})
    client = ComfyClient(ServerConfig(server.url), timeout_s=1)  # deadline: 3 × the timeout
    _fails_within(6, client.system_stats, "answered too slowly")


def _flood(write, stopping) -> None:
    while not stopping.is_set():  # tiny frames that mean nothing, and previews for another client's job
        write(ws_frame("x"))
        write(ws_frame(struct.pack(">II", 4, 20) + b'{"prompt_id": "other"}'[:20] + b"\x00" * 4))
        time.sleep(0.002)


def _never_ends(write, stopping) -> None:
    write(ws_frame(_event("progress", value=1, max=2)))
    stopping.wait(30)


def _huge_frame(write, stopping) -> None:
    write(ws_frame(b"\x00" * 16, announce=200 << 20))  # claims 200 MB
    stopping.wait(30)


def _fragments(write, stopping) -> None:
    write(ws_frame(b"\x00" * (1 << 20), opcode=2, fin=False))
    chunk = ws_frame(b"\x00" * (1 << 20), opcode=0, fin=False)
    for _ in range(40):  # 41 MB in 1 MB continuation fragments, never finished
        if stopping.is_set():
            return
        write(chunk)
    stopping.wait(30)


def _bomb_preview(write, stopping) -> None:
    head = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    write(ws_frame(_event("progress", value=1, max=2)))
    write(ws_frame(struct.pack(">II", 1, 2) + head + b"\x00" * 64))
    stopping.wait(30)


@pytest.mark.parametrize("script, match, seconds", [
    (_flood, "said nothing about the job for 2 s", 15),
    (_never_ends, "said nothing about the job for 2 s", 15),
    (_huge_frame, "websocket frame of 200 MB", 10),
    (_fragments, f"over {MAX_FRAME_BYTES >> 20} MB", 20),
    (_bomb_preview, "broken preview", 10),
])  # fmt: skip
def test_a_websocket_that_floods_stalls_or_bombs_ends_the_job_with_one_sentence(servers, script, match, seconds):
    import threading

    server = servers(ws_script=script)
    backend = ComfyBackend([server.url], timeout_s=5, silence_s=2)
    tracemalloc.start()
    try:
        _fails_within(seconds, lambda: backend.run(1, _request(), lambda e: None, threading.Event()), match)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 80 << 20


@pytest.mark.parametrize("failure", ["reset", "500"])
def test_a_server_that_fails_mid_job_hands_it_to_another_and_the_engine_goes_on(servers, failure):
    def reset(write, stopping):
        write(ws_frame(_event("progress", value=1, max=2)))
        raise OSError("reset")  # the handler closes the socket without a close frame

    bad = servers(ws_script=reset) if failure == "reset" else servers()
    if failure == "500":
        bad.answers = {k: v for k, v in bad.answers.items()}  # /prompt POST answers, /history is missing: 404
        bad.ws_script = good_job
    good = good_server(servers)
    engine = Engine(ComfyBackend([bad.url, good.url], timeout_s=5, silence_s=2))
    events: list = []
    engine.add_listener(events.append)
    try:
        ids = [engine.submit(_request()) for _ in range(3)]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len([e for e in events if isinstance(e, Finished | Failed)]) < 3:
            time.sleep(0.05)
        ended = {e.job_id: e for e in events if isinstance(e, Finished | Failed)}
        assert set(ended) == set(ids)
        if failure == "reset":  # re-sent to the good server: every job finishes
            assert all(isinstance(e, Finished) for e in ended.values())
        else:  # a server that finishes without an image is a failure that names it, not a hang
            fails = [e for e in ended.values() if isinstance(e, Failed)]
            assert all("\n" not in e.message and "127.0.0.1" in e.message for e in fails)
            assert any(isinstance(e, Finished) for e in ended.values())
        assert all(t.is_alive() for t in engine._threads)
        later = engine.submit(_request())  # the engine still takes work
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(getattr(e, "job_id", None) == later and isinstance(e, Finished | Failed)
                                                      for e in events):  # fmt: skip
            time.sleep(0.05)
        assert any(getattr(e, "job_id", None) == later and isinstance(e, Finished | Failed) for e in events)
    finally:
        engine.shutdown()
