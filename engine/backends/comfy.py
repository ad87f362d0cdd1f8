"""The ComfyUI backend: the same requests and events as the local one, run on one or several ComfyUI servers.

Each job goes to the server expected to finish it first (idle first, then the shortest queue, weighted by the
server's measured seconds per step). The Engine runs one job per server at once (`parallel_jobs`), so a batch of
variations spreads across them. A server that stops answering mid-job is set aside for a while and the job is
re-sent to another; with none left, the job fails with a message that names the server.
"""

from __future__ import annotations

import io
import json
import random
import struct
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from noisebrush.engine.backends.base import Emit, ModelInfo, Stopped
from noisebrush.engine.backends.comfy_client import ComfyClient, ServerConfig, ServerError
from noisebrush.engine.backends.comfy_workflow import OUTPUT_NODE, ServerModels, Uploads, build_workflow, region_blocks
from noisebrush.engine.backends.server_trust import TrustError, origin_text
from noisebrush.engine.errors import UserError
from noisebrush.engine.events import Finished, Preview, Progress
from noisebrush.engine.images import decode_image
from noisebrush.engine.masks import feathered, paste_back
from noisebrush.engine.request import MAX_SEED, GenerationRequest

DOWN_FOR_S = 30.0  # a server that stopped answering is skipped this long before it is tried again


@dataclass
class _Server:
    client: ComfyClient
    busy: int = 0  # our jobs on it now
    seconds_per_step: float | None = None  # measured, smoothed
    down_until: float = 0.0
    models: ServerModels | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def name(self) -> str:
        return self.client.name

    def known_models(self) -> ServerModels:
        if self.models is None:
            self.models = self.client.models()
        return self.models


def _count(names: tuple[str, ...], what: str) -> str:
    return f"{len(names)} {what}{'' if len(names) == 1 else 's'}"


def _first(names: tuple[str, ...], n: int = 3) -> str:
    """The first few checkpoint names, so a person sees at a glance whether their model is there."""
    if not names:
        return ""
    more = f" and {len(names) - n} more" if len(names) > n else ""
    return f" ({', '.join(names[:n])}{more})"


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _grey(weight: np.ndarray) -> np.ndarray:
    """A region's weight map (0..1) as the RGB picture LoadImageMask reads its red channel from."""
    grey = (np.clip(weight, 0.0, 1.0) * 255).round().astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def _decode(data: bytes, what: str, server: str) -> np.ndarray:
    """An image the server sent, as RGB uint8, with the limits every opened picture has (engine/images.py)."""
    try:
        return decode_image(io.BytesIO(data), what).image
    except UserError as exc:
        raise ServerError(f"{server} sent a broken {what} ({exc})") from None


def preview_frame(data: bytes, prompt_id: str, server: str) -> np.ndarray | None:
    """The picture in a binary websocket frame (ComfyUI's event 1, or 4 with JSON metadata), None for others."""
    if len(data) < 8:
        return None
    (event,) = struct.unpack(">I", data[:4])
    if event == 1:  # PREVIEW_IMAGE: format (1 JPEG, 2 PNG), then the image
        return _decode(data[8:], "preview", server)
    if event == 4:  # PREVIEW_IMAGE_WITH_METADATA: JSON length, JSON, image
        (n,) = struct.unpack(">I", data[4:8])
        try:
            meta = json.loads(data[8 : 8 + n])
        except (ValueError, RecursionError):  # ValueError: not UTF-8, not JSON, a 5,000-digit number
            return None
        if isinstance(meta, dict) and meta.get("prompt_id") not in (None, prompt_id):
            return None
        return _decode(data[8 + n :], "preview", server)
    return None


def _dry_run(request: GenerationRequest, models: ServerModels, server: str) -> None:
    """UserError unless the server has everything the request needs (checkpoint, ControlNets, LoRAs, sampler):
    checked before choosing it, so no picture is uploaded to a server that cannot run the job."""
    refs = request.active_references()
    uploads = Uploads(tuple("-" for _ in request.active_controls()), "-", "-", tuple("-" for _ in region_blocks(request)),
                      tuple("-" for _ in refs), tuple(None if r.mask is None else "-" for r in refs))  # fmt: skip
    build_workflow(request, 0, uploads, models, server)


class ComfyBackend:
    name = "comfyui"

    def __init__(self, servers: Sequence[ServerConfig | str], *, timeout_s: float = 10.0,
                 silence_s: float = 300.0) -> None:  # fmt: skip
        """silence_s: how long a running job may go without a word from its server before the server counts as down
        (a first job loads the model, which on a slow disk takes minutes)."""
        if not servers:
            raise UserError("no ComfyUI server given: add at least one address")
        configs = [s if isinstance(s, ServerConfig) else ServerConfig(s) for s in servers]
        self._servers = [_Server(ComfyClient(c, timeout_s)) for c in configs]
        self.parallel_jobs = len(self._servers)
        self.silence_s = silence_s
        # origin -> the SHA-256 fingerprint of a certificate the last server_info could not verify (to offer a pin)
        self.untrusted_certificates: dict[str, str] = {}
        self._lock = threading.Lock()

    @property
    def servers(self) -> list[str]:
        return [s.name for s in self._servers]

    # --- choosing a server ----------------------------------------------------------------
    def _candidates(self, request: GenerationRequest, exclude: set[str]) -> list[tuple[_Server, int]]:
        """Servers that answer and have the model, each with its queue length; the reasons for the others."""
        now = time.monotonic()
        found, reasons = [], []
        for s in self._servers:
            if s.name in exclude:
                continue
            if s.down_until > now:
                reasons.append(f"{s.name} stopped answering {DOWN_FOR_S - (s.down_until - now):.0f} s ago")
                continue
            try:
                _dry_run(request, s.known_models(), s.name)
                found.append((s, s.client.queue_remaining()))
            except ServerError as exc:
                if exc.down:
                    s.down_until = time.monotonic() + DOWN_FOR_S
                reasons.append(str(exc))
            except UserError as exc:
                reasons.append(str(exc))
        if not found:
            raise UserError("; ".join(reasons) if reasons else "no ComfyUI server is left to run this job")
        return found

    def _choose(self, request: GenerationRequest, exclude: set[str]) -> _Server:
        candidates = self._candidates(request, exclude)
        with self._lock:
            known = [s.seconds_per_step for s, _ in candidates if s.seconds_per_step]
            typical = sorted(known)[len(known) // 2] if known else 1.0

            def expected_wait(item: tuple[_Server, int]) -> tuple[bool, float]:
                s, queue = item
                load = max(queue, s.busy)  # the queue counts our jobs once they are submitted
                return load > 0, (load + 1) * (s.seconds_per_step or typical)

            server = min(candidates, key=expected_wait)[0]
            server.busy += 1
            return server

    # --- the Backend protocol -------------------------------------------------------------
    def run(self, job_id: int, request: GenerationRequest, emit: Emit, cancelled: threading.Event) -> None:
        seed = request.seed if request.seed is not None else random.randint(0, MAX_SEED)
        tried: set[str] = set()
        while True:
            server = self._choose(request, tried)
            try:
                self._run_on(server, job_id, request, seed, emit, cancelled)
                return
            except ServerError as exc:
                if not exc.down:
                    raise
                server.down_until = time.monotonic() + DOWN_FOR_S
                server.models = None  # it may come back with other models
                tried.add(server.name)
                if not any(s.name not in tried for s in self._servers):
                    raise UserError(f"{exc}; no other server can take the job") from None
                emit(Progress(job_id, f"{server.name} stopped answering; sending the job to another server"))
            finally:
                with self._lock:
                    server.busy -= 1

    def _run_on(self, server: _Server, job_id: int, request: GenerationRequest, seed: int, emit: Emit,
                cancelled: threading.Event) -> None:  # fmt: skip
        client, models = server.client, server.known_models()
        t0 = time.monotonic()
        emit(Progress(job_id, f"sending the job to {server.name}"))
        tag = uuid.uuid4().hex[:12]
        controls, refs = request.active_controls(), request.active_references()
        mask = feathered(request.mask, request.feather) if request.mode == "inpaint" else None

        def upload(image: np.ndarray, what: str) -> str:
            return client.upload_image(_png(image), f"nb-{tag}-{what}.png")

        uploads = Uploads(
            controls=tuple(upload(c.image, f"control{i}") for i, c in enumerate(controls)),
            init_image=upload(request.init_image, "init") if request.mode != "txt2img" else None,
            mask=upload(np.repeat(mask[..., None], 3, axis=2), "mask") if mask is not None else None,
            regions=tuple(upload(_grey(b.weight), f"region{i}") for i, b in enumerate(region_blocks(request))),
            references=tuple(upload(r.image, f"reference{i}") for i, r in enumerate(refs)),
            reference_masks=tuple(
                None if r.mask is None else upload(np.repeat(r.mask[..., None], 3, axis=2), f"refmask{i}")
                for i, r in enumerate(refs)
            ),
        )
        workflow = build_workflow(request, seed, uploads, models, server.name)
        checkpoint = workflow["ckpt"]["inputs"]["ckpt_name"]
        client_id = uuid.uuid4().hex
        ws = client.connect(client_id, client.timeout_s)
        try:
            prompt_id = client.submit(workflow, client_id)
            steps_done = self._follow(ws, server, prompt_id, job_id, request.steps, t0, emit, cancelled)
        finally:
            ws.close()
        image = _decode(client.output_image(prompt_id, OUTPUT_NODE), "result", server.name)
        if image.shape[:2] != (request.height, request.width):
            raise ServerError(f"{server.name} sent a {image.shape[1]}×{image.shape[0]} result for a "
                              f"{request.width}×{request.height} request")  # fmt: skip
        if mask is not None:
            image = paste_back(image, request.init_image, mask)
        elapsed = time.monotonic() - t0
        with self._lock:  # smoothed: one slow first job (model loading) should not brand a server slow for good
            per_step = elapsed / max(1, steps_done)
            old = server.seconds_per_step
            server.seconds_per_step = per_step if old is None else 0.7 * old + 0.3 * per_step
        params = request.replace(seed=seed, model=request.model or checkpoint)
        emit(Finished(job_id, image, params, elapsed, f"{checkpoint} on {server.name}"))

    def _follow(self, ws, server: _Server, prompt_id: str, job_id: int, total: int, t0: float, emit: Emit,
                cancelled: threading.Event) -> int:  # fmt: skip
        """Read the job's websocket until it ends; steps done. Stopped on cancel, ServerError when it fails."""
        import websocket

        ws.settimeout(0.05)  # short, so that cancel is seen within a step
        last_word = time.monotonic()
        step, shown = 0, 0
        while True:
            if cancelled.is_set():
                self._stop(server, prompt_id)
                raise Stopped(step)
            if time.monotonic() - last_word > self.silence_s:  # checked on every frame: a flood never times out
                raise ServerError(f"{server.name} said nothing about the job for {self.silence_s:.0f} s", down=True)
            try:
                opcode, data = ws.recv_data()
            except websocket.WebSocketTimeoutException:
                continue
            except websocket.WebSocketPayloadException as exc:
                raise ServerError(f"{server.name} sent {exc}; refused", down=True) from None
            except (OSError, websocket.WebSocketException) as exc:
                reason = "the connection was reset" if isinstance(exc, OSError) else "the websocket broke"
                raise ServerError(f"{server.name} stopped answering mid-job ({reason})", down=True) from None
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                raise ServerError(f"{server.name} closed the connection mid-job", down=True)
            if opcode == websocket.ABNF.OPCODE_BINARY:
                image = preview_frame(data, prompt_id, server.name)
                if image is not None and step > shown:  # one preview per step, however many formats it sends
                    shown = step
                    emit(Preview(job_id, step, total, image, time.monotonic() - t0))
                continue
            try:
                msg = json.loads(data)
                kind, body = msg["type"], msg.get("data") or {}
            except (ValueError, RecursionError, KeyError, TypeError):  # ValueError: JSON's, a 5,000-digit number
                continue  # not ours to understand; the job's end still comes
            if not isinstance(body, dict) or body.get("prompt_id", prompt_id) != prompt_id:
                continue
            # only ComfyUI's words about this job or its queue count as the server being alive: a flood of junk
            # frames or of previews must not keep a job that never ends waiting for ever
            if kind in ("status", "progress", "executing", "executed", "execution_start", "execution_cached"):
                last_word = time.monotonic()
            if kind == "progress":
                value = body.get("value")
                if isinstance(value, int) and 0 < value <= total:
                    step = value
            elif kind == "execution_error":
                clean = server.client._clean  # the server's words: one line, bounded, any echoed token blanked
                raise ServerError(f"{server.name}: {clean(str(body.get('node_type', 'a node')), 60)} failed: "
                                  f"{clean(str(body.get('exception_message', '')), 300)}")  # fmt: skip
            elif kind == "execution_interrupted":
                raise ServerError(f"{server.name} interrupted the job (someone pressed Cancel on the server?)")
            elif kind == "executing" and body.get("node") is None:
                return step  # not at execution_success: the server files the job's outputs between the two

    def _stop(self, server: _Server, prompt_id: str) -> None:
        """Free the server for the next job: drop the prompt if it still waits, interrupt it if it runs."""
        for call in (server.client.delete_queued, server.client.interrupt):
            try:
                call(prompt_id)
            except ServerError:
                pass  # a server that is gone has nothing left to stop

    def preload(self, model: str) -> None:
        """Check that some server has the model (servers load it themselves at the first job)."""
        self._candidates(GenerationRequest(prompt="", model=model), set())

    def list_models(self, folder: str | None = None) -> list[ModelInfo]:
        from noisebrush.engine.controls import kind_from_name

        found: dict[tuple[str, str], ModelInfo] = {}
        for s in self._servers:
            try:
                s.models = s.client.models()
            except ServerError:
                continue
            for role, names in (("base", s.models.checkpoints), ("controlnet", s.models.controlnets),
                                ("lora", s.models.loras)):  # fmt: skip
                for ref in names:
                    key = (role, ref)
                    if key in found:  # on several servers: one entry that says so
                        old = found[key]
                        found[key] = ModelInfo(ref, f"{old.title}, {s.name}", role, "", old.control_kind,
                                               source=f"{old.source}, {s.name}")  # fmt: skip
                        continue
                    kind = kind_from_name(ref) if role == "controlnet" else None
                    found[key] = ModelInfo(ref, f"{ref} · on {s.name}", role, "", kind, source=s.name)
        return list(found.values())

    def server_info(self) -> list[str]:
        """One line per server, as Settings → Test shows it: version, device, free memory, what models it has."""
        lines = []
        self.untrusted_certificates.clear()
        for s in self._servers:
            try:
                stats = s.client.system_stats()
                s.models = s.client.models()
            except UserError as exc:
                lines.append(f"✗ {exc}")
                if isinstance(exc, TrustError) and exc.fingerprint:
                    self.untrusted_certificates[origin_text(s.client.config.url)] = exc.fingerprint
                continue
            system = stats["system"]
            devices = stats.get("devices") if isinstance(stats.get("devices"), list) else []
            dev = devices[0] if devices and isinstance(devices[0], dict) else {}
            free = dev.get("vram_free") if isinstance(dev.get("vram_free"), int | float) else None
            free = free if free is not None and abs(free) < 1e18 else None  # NaN, Infinity, 10**400: not a figure
            # the server's own words (version, device, file names) as one short line, any token it echoes blanked
            version, device = (s.client._clean(str(v), 60) for v in (system.get("comfyui_version", "?"),
                                                                      dev.get("name", "no device")))  # fmt: skip
            lines.append(s.client._clean(f"✓ {s.name}: ComfyUI {version}, {device}"
                         + (f", {free / 2**30:.1f} GB free" if free is not None else "")
                         + f"; {_count(s.models.checkpoints, 'checkpoint')}, {_count(s.models.controlnets, 'ControlNet')}, "
                         f"{_count(s.models.loras, 'LoRA')}" + _first(s.models.checkpoints)
                         + f"; {s.models.reference_note}", 600))  # fmt: skip
        return lines

    def close(self) -> None:
        pass  # nothing held between jobs: each job opens and closes its own websocket
