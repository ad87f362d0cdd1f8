"""A server's token goes to that server only: redirects elsewhere are refused (HTTP and websocket), https is
verified, and a self-signed certificate works only once its fingerprint is pinned."""

import os
import stat

import pytest
from fake_servers import tls_context

from noisebrush.engine.backends.comfy import ComfyBackend
from noisebrush.engine.backends.comfy_client import ComfyClient, ServerConfig
from noisebrush.engine.backends.server_trust import TrustError, der_fingerprint, shown_fingerprint
from noisebrush.engine.credentials import SecretStore
from noisebrush.engine.errors import UserError

TOKEN = "nb-secret-4f1c9a7e"


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_to_another_port_never_carries_the_token(servers, status):
    thief = servers()
    proxy = servers(redirect_to=thief.url, status=status)
    client = ComfyClient(ServerConfig(proxy.url, TOKEN), timeout_s=5)
    with pytest.raises(TrustError) as caught:
        client.system_stats()
    message = str(caught.value)
    assert proxy.url.removeprefix("http://") in message and thief.url.split(":")[-1] in message  # names both
    assert "\n" not in message and TOKEN not in message
    assert proxy.tokens_seen() == [f"Bearer {TOKEN}"]
    assert thief.seen == []  # not even contacted


def test_a_websocket_redirect_to_another_port_never_carries_the_token(servers):
    thief = servers()
    proxy = servers(redirect_to=thief.url)
    client = ComfyClient(ServerConfig(proxy.url, TOKEN), timeout_s=5)
    with pytest.raises(TrustError, match="redirects"):
        client.connect("abc", timeout_s=5)
    assert proxy.seen and proxy.seen[0][0].startswith("/ws?clientId=abc")
    assert thief.seen == []


def test_same_origin_redirects_keep_the_token_for_http_and_websocket(servers):
    server = servers(moved_to="/comfy")  # a proxy that moved ComfyUI under /comfy on the same host and port
    client = ComfyClient(ServerConfig(server.url, TOKEN), timeout_s=5)
    assert client.system_stats()["system"]["comfyui_version"] == "0.3.64"
    ws = client.connect("abc", timeout_s=5)
    ws.close()
    assert server.seen == [
        ("/system_stats", f"Bearer {TOKEN}"),
        ("/comfy/system_stats", f"Bearer {TOKEN}"),
        ("/ws?clientId=abc", f"Bearer {TOKEN}"),
        ("/comfy/ws?clientId=abc", f"Bearer {TOKEN}"),
    ]


def test_a_self_signed_server_is_refused_until_pinned_then_works(servers):
    ctx, der = tls_context()
    server = servers(tls=ctx)
    client = ComfyClient(ServerConfig(server.url, TOKEN), timeout_s=5)
    with pytest.raises(TrustError) as caught:
        client.system_stats()
    assert caught.value.fingerprint == der_fingerprint(der)
    assert "not trusted" in str(caught.value) and shown_fingerprint(der_fingerprint(der)) in str(caught.value)
    assert server.seen == []  # the token was never sent over the unverified connection

    backend = ComfyBackend([ServerConfig(server.url, TOKEN)], timeout_s=5)
    lines = backend.server_info()
    assert lines[0].startswith("✗") and backend.untrusted_certificates == {server.url: der_fingerprint(der)}

    pinned = ComfyClient(ServerConfig(server.url, TOKEN, shown_fingerprint(der_fingerprint(der))), timeout_s=5)
    assert pinned.system_stats()["system"]["comfyui_version"] == "0.3.64"
    ws = pinned.connect("abc", timeout_s=5)  # wss through the same pin
    ws.close()
    assert server.tokens_seen() == [f"Bearer {TOKEN}"] * 2


def test_a_changed_certificate_is_refused_before_anything_is_sent(servers):
    ctx, _ = tls_context()
    server = servers(tls=ctx)
    client = ComfyClient(ServerConfig(server.url, TOKEN, "ab" * 32), timeout_s=5)
    with pytest.raises(TrustError, match="certificate changed"):
        client.system_stats()
    with pytest.raises(TrustError, match="certificate changed"):
        client.connect("abc", timeout_s=5)
    assert server.seen == []


def test_addresses_with_passwords_bad_tokens_and_bad_pins_are_one_line_errors():
    with pytest.raises(UserError, match="token field"):
        ServerConfig("https://me:hunter2@pod.example.com")
    with pytest.raises(UserError, match="line break"):
        ServerConfig("https://pod.example.com", "abc\r\nX-Evil: 1")
    with pytest.raises(UserError, match="SHA-256"):
        ServerConfig("https://pod.example.com", "", "not-a-fingerprint")
    with pytest.raises(UserError, match="only for an https"):
        ServerConfig("http://pod.example.com", "", "ab" * 32)
    assert TOKEN not in repr(ServerConfig("http://127.0.0.1:1", TOKEN))


def test_a_server_that_echoes_the_token_does_not_put_it_in_a_message(servers):
    server = servers(answers={})

    def echo(h):
        body = ('{"error": {"message": "bad auth ' + (h.headers.get("Authorization") or "") + '"}}').encode()
        h.send_response(401)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    server._handle = echo
    with pytest.raises(UserError) as caught:
        ComfyClient(ServerConfig(server.url, TOKEN), timeout_s=5).system_stats()
    assert "401" in str(caught.value) and TOKEN not in str(caught.value)


def test_the_secret_file_is_readable_only_by_its_owner(tmp_path):
    store = SecretStore(tmp_path / "conf" / "secrets.json", use_keyring=False)
    store.set("comfyui-token", TOKEN)
    assert SecretStore(tmp_path / "conf" / "secrets.json", use_keyring=False).get("comfyui-token") == TOKEN
    mode = stat.S_IMODE(os.stat(tmp_path / "conf" / "secrets.json").st_mode)
    assert mode == 0o600 and stat.S_IMODE(os.stat(tmp_path / "conf").st_mode) == 0o700
    store.set("comfyui-token", "")
    assert store.get("comfyui-token") == "" and TOKEN not in (tmp_path / "conf" / "secrets.json").read_text()


def test_a_working_keyring_holds_the_token_and_the_file_keeps_no_copy(tmp_path, monkeypatch):
    import keyring
    from keyring.backend import KeyringBackend

    class Memory(KeyringBackend):
        priority = 10
        data: dict = {}

        def get_password(self, service, username):
            return self.data.get((service, username))

        def set_password(self, service, username, password):
            self.data[(service, username)] = password

        def delete_password(self, service, username):
            self.data.pop((service, username), None)

    old = keyring.get_keyring()
    keyring.set_keyring(Memory())
    try:
        fallback = tmp_path / "secrets.json"
        SecretStore(fallback, use_keyring=False).set("comfyui-token", "old-copy")  # from a time without a keyring
        store = SecretStore(fallback)
        assert store.where == "the system keyring"
        store.set("comfyui-token", TOKEN)
        assert Memory.data[("Noisebrush", "comfyui-token")] == TOKEN
        assert "old-copy" not in fallback.read_text() and TOKEN not in fallback.read_text()
        assert SecretStore(fallback).get("comfyui-token") == TOKEN
    finally:
        keyring.set_keyring(old)


def test_the_engine_dialog_offers_to_pin_a_self_signed_certificate_then_works(servers, qtbot, tmp_path):
    from PySide6.QtCore import QSettings

    from noisebrush.gui.engine_settings import EngineChoice, EngineDialog

    ctx, der = tls_context()
    server = servers(tls=ctx)
    dlg = EngineDialog(EngineChoice(True, (server.url,), TOKEN))
    qtbot.addWidget(dlg)
    with qtbot.waitSignal(dlg.test().done, timeout=20000):
        pass
    assert "not trusted" in dlg.report.text() and not dlg.trust_button.isHidden()
    assert shown_fingerprint(der_fingerprint(der))[:23] in dlg.trust_button.text()
    assert server.seen == []
    with qtbot.waitSignal(dlg.trust_certificate().done, timeout=20000):
        pass
    assert dlg.report.text().startswith("✓") and dlg.trust_button.isHidden()
    settings = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    dlg.choice().save(settings)
    settings.sync()
    again = EngineChoice.load(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    assert again.pins == ((server.url, der_fingerprint(der)),) and again.token == TOKEN
    assert TOKEN not in (tmp_path / "s.ini").read_text()  # the token went to the secret store beside it
    assert again.backend().server_info()[0].startswith("✓ 127.0.0.1")


def test_a_token_saved_in_clear_by_an_older_version_moves_to_the_secret_store(tmp_path):
    from PySide6.QtCore import QSettings

    from noisebrush.gui.engine_settings import EngineChoice

    settings = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    settings.setValue("engine/servers", "http://127.0.0.1:8188")
    settings.setValue("engine/token", TOKEN)
    settings.sync()
    assert EngineChoice.load(settings).token == TOKEN
    assert TOKEN not in (tmp_path / "s.ini").read_text()
    assert EngineChoice.load(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)).token == TOKEN
