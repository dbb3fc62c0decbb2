"""Ed25519 signing keys with a ``kid``, so keys rotate without logging everyone out.

States: ``active`` (the newest signs and verifies), ``retired`` (verifies only:
tokens signed before a rotation stay valid until they expire) and ``revoked``
(verifies nothing: every token under that key is refused at once).

The file lives in the data dir (0600); every process reloads it when its
modification time changes, so a rotation or a revocation by ``neuronova keys``
takes effect in running services within a second, without a restart.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .secret_store import read_or_create_json, write_private_json

KEY_STATES = ("active", "retired", "revoked")


class UnusableKey(LookupError):
    """A token names a key this keyring cannot verify with."""

    def __init__(self, kid: str, reason: str) -> None:
        super().__init__(f"key {kid!r}: {reason}")
        self.kid = kid
        self.reason = reason


@dataclass(frozen=True)
class SigningKey:
    kid: str
    state: str
    created: float
    private: Ed25519PrivateKey

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()


def _new_entry() -> dict[str, Any]:
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return {
        "kid": time.strftime("%Y%m%d") + "-" + secrets.token_hex(4),
        "state": "active",
        "created": time.time(),
        "private_pem": pem,
    }


class KeyRing:
    """The signing keys of one data dir, reloaded when the file changes."""

    #: How often (s) a verifying process looks at the file's mtime.
    reload_interval = 0.5

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._keys: dict[str, SigningKey] = {}
        self._mtime = -1.0
        self._checked = 0.0
        read_or_create_json(path, lambda: {"keys": [_new_entry()]})
        self._load()

    # -- reading ---------------------------------------------------------
    def _load(self) -> None:
        data = read_or_create_json(self.path, lambda: {"keys": [_new_entry()]})
        keys = {}
        for entry in data["keys"]:
            if entry["state"] not in KEY_STATES:
                raise ValueError(f"{self.path}: key {entry['kid']} has unknown state")
            private = serialization.load_pem_private_key(entry["private_pem"].encode(), None)
            assert isinstance(private, Ed25519PrivateKey)
            keys[entry["kid"]] = SigningKey(
                entry["kid"], entry["state"], float(entry["created"]), private
            )
        self._keys = keys
        self._mtime = self.path.stat().st_mtime

    def refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked < self.reload_interval:
            return
        with self._lock:
            self._checked = now
            try:
                mtime = self.path.stat().st_mtime
            except FileNotFoundError:
                return
            if force or mtime != self._mtime:
                self._load()

    def signing_key(self) -> SigningKey:
        self.refresh()
        active = [k for k in self._keys.values() if k.state == "active"]
        if not active:
            raise RuntimeError(
                f"no active signing key in {self.path}; run `neuronova keys rotate`."
            )
        return max(active, key=lambda k: k.created)

    def verification_key(self, kid: str) -> Ed25519PublicKey:
        self.refresh()
        key = self._keys.get(kid)
        if key is None:
            raise UnusableKey(kid, "unknown key id")
        if key.state == "revoked":
            raise UnusableKey(kid, "key revoked")
        return key.public

    def state(self, kid: str) -> str | None:
        self.refresh()
        key = self._keys.get(kid)
        return key.state if key else None

    def describe(self) -> list[dict[str, Any]]:
        self.refresh(force=True)
        return [
            {"kid": k.kid, "state": k.state, "created": k.created}
            for k in sorted(self._keys.values(), key=lambda k: k.created)
        ]

    # -- changing --------------------------------------------------------
    def _rewrite(self, change: Any) -> None:
        with self._lock:
            data = read_or_create_json(self.path, lambda: {"keys": []})
            change(data["keys"])
            write_private_json(self.path, data)
            # Make the change visible to mtime watchers even within one clock tick.
            os.utime(self.path, None)
            self._load()

    def rotate(self) -> str:
        """Add a new active key; the old active keys keep verifying (``retired``)."""
        entry = _new_entry()

        def change(keys: list[dict[str, Any]]) -> None:
            for old in keys:
                if old["state"] == "active":
                    old["state"] = "retired"
            keys.append(entry)

        self._rewrite(change)
        return str(entry["kid"])

    def revoke(self, kid: str) -> None:
        """Refuse every token signed with ``kid`` from now on."""

        def change(keys: list[dict[str, Any]]) -> None:
            for entry in keys:
                if entry["kid"] == kid:
                    entry["state"] = "revoked"
                    return
            raise LookupError(f"no key {kid!r} in {self.path}")

        self._rewrite(change)
        if not any(k.state == "active" for k in self._keys.values()):
            self.rotate()
