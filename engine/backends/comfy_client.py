"""One ComfyUI server over HTTP and its websocket: every call has a timeout, every answer is untrusted input.

Only the standard library and websocket-client: no ComfyUI code is imported (it is a separate program).
"""

from __future__ import annotations

import io
import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Any

from noisebrush.engine.backends import server_trust
from noisebrush.engine.backends.comfy_workflow import ServerModels
from noisebrush.engine.backends.server_trust import TrustError
from noisebrush.engine.errors import UserError

MAX_JSON_BYTES = 32 << 20  # /object_info of a server with many custom nodes is a few MB
MAX_IMAGE_BYTES = 256 << 20
MAX_FRAME_BYTES = 32 << 20  # one websocket message (a preview is a few hundred kB; ComfyUI caps them at 512 px)


class ServerError(UserError):
    """A server failed a call. `down`: it did not answer at all (refused, reset, timed out), so another may."""

    def __init__(self, message: str, *, down: bool = False) -> None:
        super().__init__(message)
        self.down = down


@dataclass(frozen=True)
class ServerConfig:
    url: str  # http(s)://host:port[/prefix]
    # sent as "Authorization: Bearer …" for servers behind an authenticating proxy, to this server's origin only;
    # repr=False: a config printed in a log or a traceback must not carry it
    token: str = field(default="", repr=False)
    fingerprint: str = ""  # a pinned SHA-256 certificate fingerprint: the one self-signed certificate it may show

    def __post_init__(self) -> None:
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https", "ws", "wss") or not parts.hostname:
            raise UserError(f"{self.url!r} is not a server address: use http://host:port or https://host")
        if parts.query or parts.fragment:
            raise UserError(f"{self.url!r}: a server address has no ?query or #fragment")
        if parts.username is not None or parts.password is not None:
            # it would show in every message and the model picker; the token field keeps a secret out of sight
            raise UserError(f"{parts.hostname}: put the password in the token field, not in the server address")
        if any(ord(c) < 32 or ord(c) == 127 for c in self.token):
            raise UserError("the server token has a line break or control character; paste it again")
        if self.fingerprint:
            if parts.scheme not in ("https", "wss"):
                raise UserError(f"{parts.hostname}: a certificate can be pinned only for an https:// address")
            object.__setattr__(self, "fingerprint", server_trust.normal_fingerprint(self.fingerprint))

    @property
    def http_base(self) -> str:
        parts = urllib.parse.urlsplit(self.url)
        scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
        return urllib.parse.urlunsplit((scheme, parts.netloc, parts.path.rstrip("/"), "", ""))

    @property
    def ws_base(self) -> str:
        return "ws" + self.http_base.removeprefix("http")

    @property
    def name(self) -> str:
        """How messages and the model picker name the server."""
        parts = urllib.parse.urlsplit(self.http_base)
        return (parts.netloc + parts.path) or self.url


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class ComfyClient:
    def __init__(self, config: ServerConfig, timeout_s: float = 10.0) -> None:
        self.config = config
        self.timeout_s = timeout_s
        self._opener = server_trust.opener(config.name, config.fingerprint)

    @property
    def name(self) -> str:
        return self.config.name

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.config.token}"} if self.config.token else {}

    def _clean(self, text: str, limit: int = 300) -> str:
        """Server-made text as one line, with the token blanked (a hostile server may echo it back)."""
        token = self.config.token
        return _one_line(text.replace(token, "•••") if token else text, limit)

    def _reason(self, exc: BaseException) -> str:
        """Why a connection failed, in words (no errno, no exception class)."""
        import socket

        reason = getattr(exc, "reason", exc)
        if isinstance(reason, ConnectionRefusedError):
            return "connection refused: is ComfyUI running there, on that port?"
        if isinstance(reason, TimeoutError | socket.timeout):
            return f"no answer within {self.timeout_s:g} s"
        if isinstance(reason, socket.gaierror):
            return "no such host name"
        if isinstance(reason, ConnectionResetError | BrokenPipeError):
            return "the connection was reset"
        text = reason.strerror if isinstance(reason, OSError) and reason.strerror else str(reason)
        return self._clean(text, 120)

    def _untrusted(self, exc: BaseException) -> TrustError:
        fingerprint = server_trust.peer_fingerprint(self.config.http_base, min(self.timeout_s, 5.0))
        shown = f" (SHA-256 {server_trust.shown_fingerprint(fingerprint)})" if fingerprint else ""
        return TrustError(f"{self.name}'s certificate is not trusted{shown}: if it is your server's own self-signed "
                          "certificate, pin it in Settings → Engine", fingerprint=fingerprint)  # fmt: skip

    def _call(self, path: str, *, data: bytes | None = None, content_type: str = "application/json",
              limit: int = MAX_JSON_BYTES, timeout_s: float | None = None) -> bytes:  # fmt: skip
        headers = self._headers()
        if data is not None:
            headers["Content-Type"] = content_type
        req = urllib.request.Request(self.config.http_base + path, data=data, headers=headers,
                                     method="POST" if data is not None else "GET")  # fmt: skip
        timeout = timeout_s or self.timeout_s
        try:
            with self._opener.open(req, timeout=timeout) as resp:
                body = self._read_body(resp, path, limit, time.monotonic() + 3 * timeout)
        except urllib.error.HTTPError as exc:
            detail = exc.read(64 << 10).decode("utf-8", "replace") if exc.fp else ""
            raise ServerError(f"{self.name}: {path.split('?')[0]} answered {exc.code} "
                              f"{self._clean(_describe_error(detail))}") from None  # fmt: skip
        except (OSError, ValueError) as exc:  # refused, reset, DNS, timeout, TLS
            if server_trust.is_certificate_error(exc):
                raise self._untrusted(exc) from None
            raise ServerError(f"{self.name} does not answer ({self._reason(exc)})", down=True) from None
        if len(body) > limit:
            raise ServerError(f"{self.name}: {path.split('?')[0]} sent more than {limit >> 20} MB; refused")
        return body

    def _read_body(self, resp, path: str, limit: int, deadline: float) -> bytes:
        """At most limit + 1 bytes, by `deadline`: the socket timeout alone lets a server that trickles a byte a
        second hold the call for ever."""
        chunks, size = [], 0
        while size <= limit:
            chunk = resp.read1(min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if time.monotonic() > deadline:
                raise ServerError(f"{self.name}: {path.split('?')[0]} answered too slowly ({size >> 10} kB in "
                                  f"{3 * self.timeout_s:.0f} s); given up", down=True)  # fmt: skip
        return b"".join(chunks)

    def get_json(self, path: str) -> Any:
        return self._json(self._call(path), path)

    def post_json(self, path: str, payload: dict) -> Any:
        body = self._call(path, data=json.dumps(payload).encode())
        return self._json(body, path) if body.strip() else {}

    def _json(self, body: bytes, path: str) -> Any:
        try:
            return json.loads(body)
        except (ValueError, RecursionError):  # ValueError: not UTF-8, not JSON, a 5,000-digit number
            raise ServerError(f"{self.name}: {path.split('?')[0]} sent something that is not JSON (is it ComfyUI?)") from None

    # --- what the backend uses ------------------------------------------------------------
    def system_stats(self) -> dict[str, Any]:
        stats = self.get_json("/system_stats")
        if not isinstance(stats, dict) or not isinstance(stats.get("system"), dict):
            raise ServerError(f"{self.name}: /system_stats is not ComfyUI's (is this a ComfyUI server?)")
        return stats

    def models(self) -> ServerModels:
        def names(folder: str) -> tuple[str, ...]:
            found = self.get_json(f"/models/{folder}")
            if not isinstance(found, list):
                raise ServerError(f"{self.name}: /models/{folder} is not a list")
            return tuple(sorted(str(n) for n in found if isinstance(n, str)))

        sampler_info = self.get_json("/object_info/KSampler")
        try:
            required = sampler_info["KSampler"]["input"]["required"]
            samplers = tuple(str(s) for s in required["sampler_name"][0])
            schedulers = tuple(str(s) for s in required["scheduler"][0])
        except (KeyError, IndexError, TypeError):
            raise ServerError(f"{self.name}: its KSampler node looks unlike ComfyUI's") from None
        pack = self._ipadapter_pack()
        return ServerModels(names("checkpoints"), names("controlnet"), names("loras"), samplers, schedulers,
                            ipadapters=pack, clip_vision=names("clip_vision") if pack is not None else ())  # fmt: skip

    def _ipadapter_pack(self) -> tuple[str, ...] | None:
        """The IPAdapter node pack's adapter files, or None when the server lacks the pack (core ComfyUI has no
        IP-Adapter nodes: `/object_info/<class>` answers {} for a class nobody registered)."""
        from noisebrush.engine.backends.comfy_workflow import IPADAPTER_NODES

        try:
            infos = [self.get_json(f"/object_info/{cls}") for cls in IPADAPTER_NODES]
        except ServerError as exc:
            if exc.down:
                raise
            return None  # a 404 (an older server, a proxy): no pack to use either way
        if not all(isinstance(i, dict) and cls in i for i, cls in zip(infos, IPADAPTER_NODES)):
            return None
        try:
            files = infos[0][IPADAPTER_NODES[0]]["input"]["required"]["ipadapter_file"][0]
        except (KeyError, IndexError, TypeError):
            raise ServerError(f"{self.name}: its IPAdapterModelLoader node looks unlike the IPAdapter pack's") from None
        return tuple(sorted(str(f) for f in files if isinstance(f, str)))

    def upload_image(self, png: bytes, filename: str) -> str:
        """Upload a PNG into the server's input folder; the name a LoadImage node takes."""
        boundary = uuid.uuid4().hex
        body = io.BytesIO()
        for part, value in (("type", b"input"), ("overwrite", b"true")):
            body.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{part}"\r\n\r\n'.encode() + value + b"\r\n")
        body.write(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{filename}"\r\n'
                   "Content-Type: image/png\r\n\r\n".encode() + png + f"\r\n--{boundary}--\r\n".encode())  # fmt: skip
        answer = self._json(self._call("/upload/image", data=body.getvalue(),
                                       content_type=f"multipart/form-data; boundary={boundary}"), "/upload/image")  # fmt: skip
        if not isinstance(answer, dict) or not isinstance(answer.get("name"), str):
            raise ServerError(f"{self.name}: /upload/image gave no file name")
        sub = answer.get("subfolder") or ""
        return f"{sub}/{answer['name']}" if isinstance(sub, str) and sub else answer["name"]

    def submit(self, workflow: dict, client_id: str) -> str:
        answer = self.post_json("/prompt", {"prompt": workflow, "client_id": client_id})
        if not isinstance(answer, dict) or not isinstance(answer.get("prompt_id"), str):
            raise ServerError(f"{self.name}: /prompt gave no prompt id")
        return answer["prompt_id"]

    def queue_remaining(self) -> int:
        info = self.get_json("/prompt")
        try:
            return max(0, int(info["exec_info"]["queue_remaining"]))
        except (KeyError, TypeError, ValueError, OverflowError):  # Overflow: Infinity
            raise ServerError(f"{self.name}: /prompt did not say how long its queue is") from None

    def interrupt(self, prompt_id: str) -> None:
        self.post_json("/interrupt", {"prompt_id": prompt_id})

    def delete_queued(self, prompt_id: str) -> None:
        self.post_json("/queue", {"delete": [prompt_id]})

    def output_image(self, prompt_id: str, node: str) -> bytes:
        history = self.get_json(f"/history/{urllib.parse.quote(prompt_id)}")
        try:
            image = history[prompt_id]["outputs"][node]["images"][0]
            query = urllib.parse.urlencode({k: str(image[k]) for k in ("filename", "subfolder", "type")})
        except (KeyError, IndexError, TypeError):
            raise ServerError(f"{self.name}: the job finished without an image") from None
        return self._call(f"/view?{query}", limit=MAX_IMAGE_BYTES, timeout_s=max(self.timeout_s, 60))

    def connect(self, client_id: str, timeout_s: float):
        """The websocket for one client id (its progress, previews and end of job). Redirects are followed here,
        not by websocket-client, which would send the token wherever they point."""
        import websocket

        url = f"{self.config.ws_base}/ws?clientId={urllib.parse.quote(client_id)}"
        for _ in range(4):
            ws = websocket.WebSocket(enable_multithread=True)
            try:
                sock = (server_trust.pinned_socket(url, self.config.fingerprint, self.name, timeout_s)
                        if self.config.fingerprint else None)  # fmt: skip
                ws.connect(url, timeout=timeout_s, header=self._headers(), redirect_limit=0, socket=sock)
                return _bounded(ws)
            except websocket.WebSocketBadStatusException as exc:
                raise ServerError(f"{self.name} refused its websocket ({exc.status_code} "
                                  f"{self._clean(str(exc.status_message or ''), 60)})") from None  # fmt: skip
            except websocket.WebSocketException as exc:
                answer = ws.handshake_response
                location = answer.headers.get("location") if answer is not None else None
                if not location:
                    raise ServerError(f"{self.name} does not answer on its websocket ({self._clean(str(exc), 120)})",
                                      down=True) from None  # fmt: skip
                target = urllib.parse.urljoin(url.replace("ws", "http", 1), location)
                if server_trust.origin(target) != server_trust.origin(url):
                    raise server_trust.cross_origin_refusal(self.name, url, target) from None
                url = target.replace("http", "ws", 1)
            except OSError as exc:
                if server_trust.is_certificate_error(exc):
                    raise self._untrusted(exc) from None
                raise ServerError(f"{self.name} does not answer on its websocket ({self._reason(exc)})", down=True) from None
        raise ServerError(f"{self.name} redirects its websocket in a loop")


def _bounded(ws):
    """Refuse a websocket message over MAX_FRAME_BYTES before it is read: websocket-client would otherwise read a
    frame of any announced length (or any number of continuation fragments) into memory."""
    import websocket

    frames = ws.frame_buffer
    read_length, read_frame = frames.recv_length, ws.recv_frame
    pending = [0]  # bytes of the message being received in fragments

    def recv_length() -> None:
        read_length()
        if frames.length is not None and frames.length > MAX_FRAME_BYTES:
            raise websocket.WebSocketPayloadException(f"a websocket frame of {frames.length >> 20} MB")

    def recv_frame():
        frame = read_frame()
        if frame.opcode in (websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_BINARY, websocket.ABNF.OPCODE_CONT):
            pending[0] = 0 if frame.opcode != websocket.ABNF.OPCODE_CONT else pending[0]
            pending[0] += len(frame.data)
            if pending[0] > MAX_FRAME_BYTES:
                raise websocket.WebSocketPayloadException(f"a websocket message of over {MAX_FRAME_BYTES >> 20} MB")
            if frame.fin:
                pending[0] = 0
        return frame

    frames.recv_length, ws.recv_frame = recv_length, recv_frame
    return ws


def _describe_error(detail: str) -> str:
    """ComfyUI's error JSON ({"error": {"message", "details"}, "node_errors": …}) as one readable line."""
    try:
        data = json.loads(detail)
    except (ValueError, RecursionError):  # ValueError: not JSON, or a number past Python's 4,300 digits
        return _one_line(detail, 200)
    if not isinstance(data, dict):
        return ""
    parts = []
    err = data.get("error")
    if isinstance(err, dict):
        parts.append(str(err.get("message", "")))
        if err.get("details"):
            parts.append(str(err["details"]))
    nodes = data.get("node_errors")
    if isinstance(nodes, dict):
        for node_err in list(nodes.values())[:2]:
            errors = node_err.get("errors") if isinstance(node_err, dict) else None
            for e in errors[:1] if isinstance(errors, list) else []:  # a number or an object is no list of errors
                if isinstance(e, dict):
                    parts.append(f"{e.get('message', '')}: {e.get('details', '')}")
    return _one_line(" — ".join(p for p in parts if p), 300)
