"""Minting and verifying the platform's JWTs.

Three kinds, told apart by ``typ`` and ``aud`` so that one can never stand in
for another:

* ``access``  — ``aud`` = the platform audience; carried as ``Authorization: Bearer``.
* ``refresh`` — ``aud`` = ``<audience>:refresh``; only the API's refresh route takes it.
* ``signed``  — ``aud`` = ``<audience>:pacs-signed``; a study-scoped token carried in
  the query string of DICOMweb URLs, for viewers that cannot set headers.

Only ``EdDSA`` is accepted: the header's ``alg`` is checked before anything
else, which closes ``alg: none`` and the HS256-with-the-public-key confusion.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import jwt

from .keyring import KeyRing, UnusableKey
from .roles import Role

ALGORITHM = "EdDSA"
#: Tolerance for clock drift between the machine that signs and the one that checks, for a
#: token's start (``nbf``, ``iat``) only: a token is refused from its expiry (``exp``) on,
#: never a moment later, so no decision made or cached on it can outlive it.
LEEWAY_S = 5


class TokenError(Exception):
    """A token was refused; ``reason`` is a short code kept in the audit log."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Claims:
    sub: str
    role: Role
    typ: str
    jti: str
    exp: float
    kid: str
    studies: tuple[str, ...] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: Issue time with milliseconds, so a per-user revocation at time t refuses a
    #: token minted just before t and not one minted just after it.
    iat: float = 0.0
    #: For a signed URL, the jti of the token that minted it: revoking that token
    #: revokes its signed URLs too.
    parent: str | None = None
    #: RFC 8693 ``act``: who acts for ``sub`` (a kernel's token: the hub server, and the
    #: kernel when known), e.g. ``{"sub": "jupyterhub", "server": "scientist/"}``.
    act: dict[str, str] | None = None

    @property
    def server(self) -> str | None:
        """The hub server this token was exchanged for (``act.server``), if any."""
        return self.act.get("server") if self.act else None

    def allows_study(self, study_uid: str) -> bool:
        return self.studies is None or study_uid in self.studies


class TokenService:
    """Mints and verifies tokens with the keys of one :class:`KeyRing`."""

    def __init__(self, keyring: KeyRing, audience: str, issuer: str) -> None:
        self.keyring = keyring
        self.audience = audience
        self.issuer = issuer

    def audience_for(self, typ: str) -> str:
        return {"access": self.audience, "refresh": f"{self.audience}:refresh",
                "signed": f"{self.audience}:pacs-signed"}[typ]

    # -- minting ---------------------------------------------------------
    def mint(
        self,
        sub: str,
        role: Role | str,
        typ: str,
        ttl: float,
        studies: list[str] | None = None,
        not_before: float | None = None,
        jti: str | None = None,
        parent: str | None = None,
        act: dict[str, str] | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """Return ``(token, claims)``; ``studies`` limits the token to those studies.

        ``parent`` (signed URLs) names the jti of the token that asked for this one;
        ``act`` (token exchange) names the party acting for the user (RFC 8693).
        """
        key = self.keyring.signing_key()
        now = time.time()
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience_for(typ),
            "sub": sub,
            "role": str(Role(role)),
            "typ": typ,
            "iat": round(now, 3),
            "nbf": int(not_before if not_before is not None else now),
            "exp": int(now + ttl),
            "jti": jti or secrets.token_urlsafe(12),
        }
        if studies is not None:
            claims["studies"] = list(studies)
        if parent is not None:
            claims["pjti"] = parent
        if act is not None:
            claims["act"] = dict(act)
        token = jwt.encode(claims, key.private, algorithm=ALGORITHM, headers={"kid": key.kid})
        return token, claims

    # -- verifying -------------------------------------------------------
    @staticmethod
    def bearer_kind(token: str) -> str:
        """Which kind a bearer token says it is: ``"signed"`` or ``"access"``.

        Read from the unverified payload only to choose the check: :meth:`verify`
        then requires that kind's audience and ``typ`` as for any token, so a token
        claiming to be another kind than it is fails there. Anything unreadable is
        treated as an access token (and refused by its check).
        """
        try:
            payload = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            return "access"
        return "signed" if payload.get("typ") == "signed" else "access"

    def verify(self, token: str, typ: str) -> Claims:
        """Check signature, key state, audience, issuer and times; raise :class:`TokenError`."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError as exc:
            raise TokenError("malformed", f"not a JWT: {exc}") from None
        if header.get("alg") != ALGORITHM:
            raise TokenError("bad_alg", f"algorithm {header.get('alg')!r} is not accepted")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TokenError("no_kid", "token has no key id")
        try:
            public = self.keyring.verification_key(kid)
        except UnusableKey as exc:
            reason = "revoked_kid" if exc.reason == "key revoked" else "unknown_kid"
            raise TokenError(reason, str(exc)) from None
        try:
            payload = jwt.decode(
                token,
                public,
                algorithms=[ALGORITHM],
                audience=self.audience_for(typ),
                issuer=self.issuer,
                leeway=LEEWAY_S,
                options={"require": ["exp", "iat", "nbf", "sub", "jti", "aud", "iss"],
                         "verify_exp": False},  # checked below, without the leeway
            )
        except jwt.ImmatureSignatureError:
            raise TokenError("not_yet_valid", "token is not valid yet") from None
        except jwt.InvalidAudienceError:
            raise TokenError("bad_audience", "token is not meant for this service") from None
        except jwt.InvalidIssuerError:
            raise TokenError("bad_issuer", "token was issued by someone else") from None
        except jwt.InvalidSignatureError:
            raise TokenError("bad_signature", "token signature does not verify") from None
        except jwt.MissingRequiredClaimError as exc:
            raise TokenError("missing_claim", str(exc)) from None
        except jwt.PyJWTError as exc:
            raise TokenError("invalid", str(exc)) from None
        exp = payload["exp"]
        if isinstance(exp, bool) or not isinstance(exp, int | float):
            raise TokenError("invalid", "exp claim must be a number")
        if exp <= time.time():
            raise TokenError("expired", "token has expired; sign in again")
        if payload.get("typ") != typ:
            raise TokenError("wrong_type", f"a {payload.get('typ')!r} token cannot be used here")
        try:
            role = Role(str(payload.get("role")))
        except ValueError:
            raise TokenError("bad_role", f"unknown role {payload.get('role')!r}") from None
        studies = payload.get("studies")
        if studies is not None and (
            not isinstance(studies, list) or not all(isinstance(s, str) for s in studies)
        ):
            raise TokenError("bad_scope", "studies claim must be a list of UIDs")
        act = payload.get("act")
        if act is not None and (not isinstance(act, dict)
                                or not all(isinstance(v, str) for v in act.values())):
            raise TokenError("bad_act", "act claim must be an object of strings")
        return Claims(
            sub=str(payload["sub"]),
            role=role,
            typ=typ,
            jti=str(payload["jti"]),
            exp=float(payload["exp"]),
            kid=kid,
            studies=tuple(studies) if studies is not None else None,
            iat=float(payload["iat"]),
            parent=str(payload["pjti"]) if payload.get("pjti") is not None else None,
            act=dict(act) if act is not None else None,
        )


def token_service(settings: Any) -> TokenService:
    """The token service of a data dir (``settings`` is a :class:`~neuronova_lib.config.Settings`)."""
    return TokenService(
        KeyRing(settings.secrets_dir / "jwt-keys.json"),
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
    )
