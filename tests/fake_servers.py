"""Small HTTP(S) servers on 127.0.0.1 that play a ComfyUI server, or a hostile one, for the client's tests.

Each records what it was sent (path and Authorization header), so a test can say which server saw a token.
"""

from __future__ import annotations

import base64
import hashlib
import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

COMFY_ANSWERS = {
    "/system_stats": {"system": {"comfyui_version": "0.3.64"}, "devices": [{"name": "cpu", "vram_free": 2**30}]},
    "/models/checkpoints": ["fake.safetensors"],
    "/models/controlnet": [],
    "/models/loras": [],
    "/object_info/KSampler": {
        "KSampler": {"input": {"required": {"sampler_name": [["euler"]], "scheduler": [["normal"]]}}}
    },  # fmt: skip
    "/prompt": {"exec_info": {"queue_remaining": 0}},
}
COMFY_ANSWERS["/object_info/KSampler"]["KSampler"]["input"]["required"] = {
    "sampler_name": [["euler", "euler_ancestral", "dpmpp_2m", "ddim", "uni_pc", "lcm"]],
    "scheduler": [["normal", "karras", "simple", "ddim_uniform", "sgm_uniform"]],
}
PROMPT_ID = "p-1"
POST_ANSWERS = {"/prompt": {"prompt_id": PROMPT_ID}, "/upload/image": {"name": "up.png"}, "/interrupt": {}, "/queue": {}}


def ws_frame(payload: bytes | str, *, opcode: int | None = None, fin: bool = True, announce: int | None = None) -> bytes:
    """One server-to-client websocket frame (unmasked). `announce`: a length to claim instead of the real one."""
    data = payload.encode() if isinstance(payload, str) else payload
    op = opcode if opcode is not None else (1 if isinstance(payload, str) else 2)
    n = len(data) if announce is None else announce
    head = bytes([(0x80 if fin else 0) | op])
    if n < 126:
        head += bytes([n])
    elif n < 1 << 16:
        head += bytes([126]) + n.to_bytes(2, "big")
    else:
        head += bytes([127]) + n.to_bytes(8, "big")
    return head + data


class FakeServer:
    """`redirect_to`: answer every request with `status` and Location: that base + the same path.
    `moved_to`: a path prefix on this same server; requests outside it are redirected into it (a proxy that moved
    ComfyUI under /comfy). `answers`: path -> JSON (ComfyUI's by default). A /ws request gets a websocket
    handshake (then a close)."""

    def __init__(self, *, redirect_to: str = "", status: int = 302, moved_to: str = "", answers: dict | None = None,
                 tls: ssl.SSLContext | None = None, ws_script=None, slow: dict | None = None) -> None:  # fmt: skip
        """`ws_script(write)`: what the websocket sends after its handshake (frames made with ws_frame); `slow`:
        path -> seconds between the bytes of its answer (a server that trickles)."""
        self.ws_script, self.slow = ws_script, slow or {}
        self.stopping = threading.Event()
        self.seen: list[tuple[str, str]] = []  # (path, Authorization header or "")
        self.redirect_to, self.status, self.moved_to = redirect_to, status, moved_to
        self.answers = COMFY_ANSWERS if answers is None else answers
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                outer._handle(self)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                outer._handle(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="fake-server", daemon=True)
        self._thread.start()

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        self.seen.append((h.path, h.headers.get("Authorization") or ""))
        if self.redirect_to or (self.moved_to and not h.path.startswith(self.moved_to)):
            h.send_response(self.status)
            h.send_header("Location", (self.redirect_to or self.moved_to) + h.path)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        path = h.path.split("?")[0].removeprefix(self.moved_to)
        if path == "/ws" and h.headers.get("Upgrade", "").lower() == "websocket":
            accept = base64.b64encode(hashlib.sha1((h.headers["Sec-WebSocket-Key"] + WS_GUID).encode()).digest())
            h.send_response(101)
            h.send_header("Upgrade", "websocket")
            h.send_header("Connection", "Upgrade")
            h.send_header("Sec-WebSocket-Accept", accept.decode())
            h.end_headers()
            if self.ws_script is not None:
                try:
                    self.ws_script(h.wfile.write, self.stopping)
                except OSError:
                    pass  # the client hung up, as it should
            h.wfile.write(b"\x88\x00")  # close
            h.close_connection = True
            return
        if h.command == "POST" and path in POST_ANSWERS:
            body = json.dumps(POST_ANSWERS[path]).encode()
            h.send_response(200)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
            return
        if path not in self.answers:
            h.send_error(404)
            return
        answer = self.answers[path]
        body = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if path in self.slow:
            for i in range(len(body)):
                if self.stopping.wait(self.slow[path]):
                    return
                h.wfile.write(body[i : i + 1])
                h.wfile.flush()
            return
        h.wfile.write(body)

    def tokens_seen(self) -> list[str]:
        return [auth for _, auth in self.seen if auth]

    def stop(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def tls_context(hostname: str = "127.0.0.1") -> tuple[ssl.SSLContext, bytes]:
    """A server-side TLS context with a certificate from a CA nobody trusts (as a self-signed one), and its DER."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert(hostname)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(ctx)
    der = ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())
    return ctx, der
