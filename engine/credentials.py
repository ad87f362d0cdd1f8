"""Secrets (a ComfyUI server's token, a Hugging Face token) kept out of settings files, logs and pictures.

The system keyring holds them where one works (GNOME Keyring, KWallet, macOS Keychain, Windows Credential Locker,
through `keyring`); otherwise a JSON file that only the user can read (mode 0600, in a 0700 folder), beside the
settings. Nothing else in Noisebrush writes a secret anywhere.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from noisebrush.engine.errors import UserError

SERVICE = "Noisebrush"
log = logging.getLogger(__name__)


def _keyring():
    """The system keyring, or None where there is none that works (a headless machine, a container)."""
    try:
        import keyring
    except ImportError:
        return None
    try:
        backend = keyring.get_keyring()
    except Exception as exc:  # a broken keyring configuration must not stop the app
        log.warning("no keyring: %s", type(exc).__name__)
        return None
    return backend if getattr(backend, "priority", 0) > 0 else None


class SecretStore:
    """get/set by key; `set(key, "")` forgets it. `fallback`: the file used where no keyring works."""

    def __init__(self, fallback: Path, *, use_keyring: bool = True) -> None:
        self.fallback = Path(fallback)
        self._keyring = _keyring() if use_keyring else None

    @property
    def where(self) -> str:
        return "the system keyring" if self._keyring is not None else f"{self.fallback} (readable only by you)"

    def get(self, key: str) -> str:
        if self._keyring is not None:
            try:
                return self._keyring.get_password(SERVICE, key) or ""
            except Exception as exc:
                log.warning("the keyring could not be read (%s); using %s", type(exc).__name__, self.fallback)
                self._keyring = None
        value = self._read().get(key, "")
        return value if isinstance(value, str) else ""

    def set(self, key: str, value: str) -> None:
        if self._keyring is not None:
            try:
                if value:
                    self._keyring.set_password(SERVICE, key, value)
                elif self._keyring.get_password(SERVICE, key) is not None:
                    self._keyring.delete_password(SERVICE, key)
                self._forget_in_file(key)  # a copy from a time without a keyring must not stay behind
                return
            except Exception as exc:
                log.warning("the keyring could not be written (%s); using %s", type(exc).__name__, self.fallback)
                self._keyring = None
        data = self._read()
        if value:
            data[key] = value
        else:
            data.pop(key, None)
        self._write(data)

    def _forget_in_file(self, key: str) -> None:
        data = self._read()
        if key in data:
            del data[key]
            self._write(data)

    def _read(self) -> dict:
        try:
            data = json.loads(self.fallback.read_text("utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            log.warning("%s is unreadable; its secrets are ignored", self.fallback)
            return {}
        return data if isinstance(data, dict) else {}

    def _write(self, data: dict) -> None:
        folder = self.fallback.parent
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = self.fallback.with_name(self.fallback.name + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                os.fchmod(f.fileno(), 0o600)  # O_CREAT's mode does not apply to a file left by a crash
                json.dump(data, f)
            os.replace(tmp, self.fallback)
        except OSError as exc:
            raise UserError(f"could not keep the token in {self.fallback} ({exc.strerror or exc})") from None
