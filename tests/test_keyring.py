"""Signing keys: rotation keeps old tokens, revocation refuses them, files stay private."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from neuronova_lib.security.keyring import KeyRing
from neuronova_lib.security.secret_store import read_or_create_json
from neuronova_lib.security.tokens import TokenError, TokenService


def service(path: Path) -> TokenService:
    return TokenService(KeyRing(path), "neuronova", "neuronova")


def test_key_file_is_private_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "keys.json"
    first = KeyRing(path).signing_key().kid
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert KeyRing(path).signing_key().kid == first


def test_a_readable_secret_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    read_or_create_json(path, lambda: {"a": 1})
    path.chmod(0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        read_or_create_json(path, dict)


def test_rotation_then_revocation_across_processes(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    signer, verifier = service(path), service(path)  # two processes sharing the data dir
    old = signer.mint("a", "clinician", "access", 60)[0]
    new_kid = signer.keyring.rotate()
    verifier.keyring.refresh(force=True)
    assert verifier.verify(old, "access").sub == "a"
    new = signer.mint("a", "clinician", "access", 60)[0]
    assert verifier.verify(new, "access").kid == new_kid
    old_kid = verifier.verify(old, "access").kid
    signer.keyring.revoke(old_kid)
    verifier.keyring.refresh(force=True)
    with pytest.raises(TokenError) as caught:
        verifier.verify(old, "access")
    assert caught.value.reason == "revoked_kid"
    assert verifier.verify(new, "access").sub == "a"


def test_revoking_the_only_active_key_makes_a_new_one(tmp_path: Path) -> None:
    ring = KeyRing(tmp_path / "keys.json")
    kid = ring.signing_key().kid
    ring.revoke(kid)
    assert ring.signing_key().kid != kid
    assert [k["state"] for k in ring.describe()] == ["revoked", "active"]


def test_revoking_an_unknown_key_says_so(tmp_path: Path) -> None:
    with pytest.raises(LookupError, match="no key"):
        KeyRing(tmp_path / "keys.json").revoke("nope")
