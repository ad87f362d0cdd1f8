"""A Hugging Face Hub stand-in on 127.0.0.1 for the model pack tests: files by repo and path, served with Range
(resume), the LFS checksum header, an optional cut halfway, gated repos that want a token, and the model info API
that lists a repo's files."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GOOD_TOKEN = "hf_good_token"


class HubStub:
    def __init__(self) -> None:
        self.files: dict[tuple[str, str], bytes] = {}
        self.gated: set[str] = set()
        self.cut_once: set[tuple[str, str]] = set()  # send half of these, once, then drop the connection
        self.wrong_etag: set[tuple[str, str]] = set()
        self.delay_s = 0.0  # a pause after each 64 KiB, for a download slow enough to watch and cancel
        self.requests: list[tuple[str, str | None, str | None]] = []  # (path, Range, Authorization)
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                stub.requests.append((self.path, self.headers.get("Range"), self.headers.get("Authorization")))
                api = re.match(r"^/api/models/([^/]+/[^/?]+)(?:/revision/[^?]+)?(?:\?.*)?$", self.path)
                got = re.match(r"^/([^/]+/[^/]+)/resolve/main/(.+)$", self.path)
                repo = (api or got).group(1) if (api or got) else ""
                if repo in stub.gated and self.headers.get("Authorization") != f"Bearer {GOOD_TOKEN}":
                    self.send_response(401)
                    self.send_header("X-Error-Code", "GatedRepo")
                    self.send_header("X-Error-Message", "Access to this repo is restricted")
                    self.end_headers()
                    return
                if api:
                    siblings = [{"rfilename": p, "size": len(b)} for (r, p), b in stub.files.items() if r == repo]
                    body = json.dumps({"id": repo, "modelId": repo, "sha": "0" * 40, "siblings": siblings}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                key = (repo, got.group(2)) if got else ("", "")
                if key not in stub.files:
                    self.send_response(404)
                    self.end_headers()
                    return
                data = stub.files[key]
                start = 0
                rng = re.match(r"bytes=(\d+)-", self.headers.get("Range") or "")
                if rng:
                    start = int(rng.group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.end_headers()
                        return
                self.send_response(206 if start else 200)
                sha = hashlib.sha256(b"x" if key in stub.wrong_etag else data).hexdigest()
                self.send_header("X-Linked-Etag", f'"{sha}"')
                self.send_header("Content-Length", str(len(data) - start))
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if key in stub.cut_once:
                    stub.cut_once.discard(key)
                    self.wfile.write(data[start : start + (len(data) - start) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                for at in range(start, len(data), 1 << 16):
                    try:
                        self.wfile.write(data[at : at + (1 << 16)])
                    except OSError:  # the client hung up (a cancel)
                        return
                    time.sleep(stub.delay_s)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, repo: str, path: str, data: bytes) -> str:
        self.files[(repo, path)] = data
        return hashlib.sha256(data).hexdigest()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
