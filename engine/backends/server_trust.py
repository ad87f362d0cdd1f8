"""Who a server's credentials may go to: its own origin only, over TLS that is verified or pinned.

A token configured for one server must never reach another host. urllib's redirect handler copies every header
(Authorization included) to wherever a 30x points, and websocket-client does the same with its `header=`, so both
paths go through here: a redirect that leaves the origin (scheme, host, port) is refused with a sentence naming
both addresses; one that stays keeps the header. `https`/`wss` verify certificates against the system's CAs; a
server with a self-signed certificate works only once the person pins its SHA-256 fingerprint for that server
(Settings → Engine shows it), never by turning verification off for all.
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import socket
import ssl
import urllib.parse
import urllib.request

from noisebrush.engine.errors import UserError

DEFAULT_PORTS = {"http": 80, "https": 443}


class TrustError(UserError):
    """A server was refused for what it did with trust (a redirect elsewhere, an unknown or changed certificate).
    `fingerprint`: the certificate it showed, where that is what the person may choose to pin."""

    def __init__(self, message: str, *, fingerprint: str = "") -> None:
        super().__init__(message)
        self.fingerprint = fingerprint


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) with ws/wss folded into http/https: a websocket shares its server's origin."""
    parts = urllib.parse.urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme.lower(), parts.scheme.lower())
    try:
        port = parts.port
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower(), port or DEFAULT_PORTS.get(scheme, 0)


def origin_text(url: str) -> str:
    scheme, host, port = origin(url)
    return f"{scheme}://{host}:{port}"


def normal_fingerprint(text: str) -> str:
    """'AB:CD:…' or 'abcd…' as 64 lower-case hex digits; UserError for anything else."""
    digits = "".join(text.split()).replace(":", "").lower()
    if len(digits) != 64 or any(c not in "0123456789abcdef" for c in digits):
        raise UserError(f"{text!r} is not a SHA-256 certificate fingerprint (64 hex digits)")
    return digits


def shown_fingerprint(digits: str) -> str:
    """The way browsers show a fingerprint: AB:CD:…"""
    return ":".join(digits[i : i + 2] for i in range(0, len(digits), 2)).upper()


def der_fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def cross_origin_refusal(server: str, source: str, target: str) -> TrustError:
    return TrustError(
        f"{server} redirects {origin_text(source)} to {origin_text(target)}; Noisebrush does not follow "
        "a server to another address (its token stays with it): if you trust that one, enter it instead"
    )


def _unverified_context() -> ssl.SSLContext:
    """For pinned servers only: the chain is not checked against CAs because the fingerprint is checked instead."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def check_pin(sock: ssl.SSLSocket, pin: str, server: str) -> None:
    """Close `sock` and raise unless its peer's certificate has the pinned fingerprint (before anything is sent)."""
    der = sock.getpeercert(binary_form=True) or b""
    seen = der_fingerprint(der)
    if seen != pin:
        sock.close()
        raise TrustError(f"{server}'s certificate changed: it shows SHA-256 {shown_fingerprint(seen)}, not the pinned "
                         f"{shown_fingerprint(pin)}; nothing was sent to it", fingerprint=seen)  # fmt: skip


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, *args, pin: str, server: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._pin, self._server = pin, server

    def connect(self) -> None:
        super().connect()
        check_pin(self.sock, self._pin, self._server)  # TrustError is no OSError: urllib lets it through unwrapped


class _PinnedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, pin: str, server: str) -> None:
        super().__init__(context=_unverified_context())
        self._connection = functools.partial(_PinnedHTTPSConnection, pin=pin, server=server)

    def https_open(self, req):
        return self.do_open(self._connection, req, context=self._context)


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    def __init__(self, server: str) -> None:
        super().__init__()
        self._server = server

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        target = urllib.parse.urljoin(req.full_url, newurl)
        if origin(target) != origin(req.full_url):
            fp.close()
            raise cross_origin_refusal(self._server, req.full_url, target)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def opener(server: str, pin: str = "") -> urllib.request.OpenerDirector:
    """urllib for one server: same-origin redirects only; its certificate pinned when `pin` is given."""
    handlers: list = [_SameOriginRedirects(server)]
    if pin:
        handlers.append(_PinnedHTTPSHandler(pin, server))
    return urllib.request.build_opener(*handlers)


def pinned_socket(url: str, pin: str, server: str, timeout_s: float) -> ssl.SSLSocket:
    """A TLS socket to `url`'s host whose certificate has the pinned fingerprint, for websocket-client's `socket=`."""
    _, host, port = origin(url)
    raw = socket.create_connection((host, port), timeout=timeout_s)
    try:
        tls = _unverified_context().wrap_socket(raw, server_hostname=host)
    except BaseException:
        raw.close()
        raise
    check_pin(tls, pin, server)
    return tls


def peer_fingerprint(url: str, timeout_s: float = 5.0) -> str:
    """The SHA-256 fingerprint of the certificate an https/wss server shows (nothing is sent beyond the TLS hello),
    so the person can compare it with the server's own before pinning it; "" when it cannot be read."""
    scheme, host, port = origin(url)
    if scheme != "https":
        return ""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as raw:
            with _unverified_context().wrap_socket(raw, server_hostname=host) as tls:
                return der_fingerprint(tls.getpeercert(binary_form=True) or b"")
    except (OSError, ValueError):
        return ""


def is_certificate_error(exc: BaseException) -> bool:
    reason = getattr(exc, "reason", exc)
    return isinstance(reason, ssl.SSLCertVerificationError) or isinstance(exc, ssl.SSLCertVerificationError)
