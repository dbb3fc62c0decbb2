"""The guard's decision for one DICOMweb request: allow (with the internal URI) or deny.

Kept free of HTTP plumbing so that every rule can be read, and tested, in one
place. Order of checks: the URI's shape (before anything is trusted), the
token, the method the role may use, then the study scope.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

from neuronova_lib.db.revocation import RevocationWatcher
from neuronova_lib.security.roles import IMAGE_READERS, IMAGE_WRITERS
from neuronova_lib.security.tokens import Claims, TokenError, TokenService

from .paths import DicomWebTarget, Refusal, parse

INTERNAL_LOCATION = "/internal-orthanc/"
READ_METHODS = frozenset({"GET", "HEAD"})


class TokenRefused(Refusal):
    """A token that verified but is refused (revoked, user disabled, role changed).

    Carries the token's claims so the audit row still says whose token it was.
    """

    def __init__(self, claims: Claims, status: int, reason: str, detail: str) -> None:
        super().__init__(status, reason, detail)
        self.claims = claims


@dataclass
class Decision:
    allow: bool
    status: int
    reason: str
    detail: str = ""
    claims: Claims | None = None
    target: DicomWebTarget | None = None
    redirect: str | None = None

    @property
    def study(self) -> str | None:
        if self.target is None:
            return None
        if self.target.study:
            return self.target.study
        return ",".join(self.target.query_studies)[:64] or None


class VerifiedTokenCache:
    """Tokens already verified, so a series of 155 frames costs one signature check.

    A hit is re-checked for expiry and for its key's state, so a key revocation
    still takes effect at once. It holds signatures only: whether the token's
    user, role and jti are still good is asked of the revocation snapshot on
    every request, hit or miss (:meth:`Guard.authenticate`), so no cached
    entry outlives a revocation by more than ``NEURONOVA_REVOCATION_BOUND``.
    """

    def __init__(self, tokens: TokenService, size: int = 4096) -> None:
        self._tokens = tokens
        self._size = size
        self._cache: OrderedDict[tuple[str, str], Claims] = OrderedDict()

    def verify(self, token: str, typ: str) -> Claims:
        key = (typ, token)
        claims = self._cache.get(key)
        if claims is not None:
            if claims.exp <= time.time():  # as TokenService.verify: refused from exp on
                del self._cache[key]
                raise TokenError("expired", "token has expired; sign in again")
            if self._tokens.keyring.state(claims.kid) in (None, "revoked"):
                del self._cache[key]
                raise TokenError("revoked_kid", f"key {claims.kid!r}: key revoked")
            return claims
        claims = self._tokens.verify(token, typ)
        self._cache[key] = claims
        if len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return claims


class Guard:
    """Decides DICOMweb requests for one data dir's keys and user database.

    ``revocations`` (the guard service always has one) refuses tokens of
    disabled, deleted or re-roled users and revoked tokens; without it only the
    token itself is checked (rule tests).
    """

    def __init__(self, tokens: TokenService, wado_plugin: bool = False,
                 revocations: RevocationWatcher | None = None) -> None:
        self.tokens = tokens
        self.wado_plugin = wado_plugin
        self.revocations = revocations
        self._verified = VerifiedTokenCache(tokens)

    def authenticate(self, authorization: str | None, query_token: str | None) -> Claims:
        """The claims of the request's token: a signed URL's ``?token=``, or a bearer header
        holding an access token or a study-scoped signed token (whose scope then binds the
        request exactly as in a URL). Callers that mint or store require ``typ == "access"``.
        """
        if authorization and query_token:
            raise Refusal(400, "two_tokens", "send a bearer token or a signed URL, not both")
        try:
            if query_token:
                claims = self._verified.verify(query_token, "signed")
            elif not authorization:
                raise Refusal(401, "no_token", "sign in: no bearer token and no signed URL")
            else:
                scheme, _, token = authorization.partition(" ")
                if scheme.lower() != "bearer" or not token.strip():
                    raise Refusal(401, "bad_scheme", "use 'Authorization: Bearer <token>'")
                # A viewer given a signed URL's token may send it as a bearer header
                # (OHIF turns ?token= into one): the same token, the same checks.
                token = token.strip()
                claims = self._verified.verify(token, self.tokens.bearer_kind(token))
        except TokenError as exc:
            raise Refusal(401, exc.reason, exc.detail) from None
        if self.revocations is not None:
            refused = self.revocations.refusal(claims)
            if refused is not None:
                raise TokenRefused(claims, refused.status, refused.reason, refused.detail)
        return claims

    @staticmethod
    def authorize_method(method: str, claims: Claims) -> None:
        if method in READ_METHODS:
            if claims.role not in IMAGE_READERS:
                raise Refusal(403, "role", f"role {claims.role} may not read images")
            return
        if method == "POST":
            if claims.role not in IMAGE_WRITERS:
                raise Refusal(403, "role", f"role {claims.role} may not store images")
            # nginx sends POSTs to the ingest gate (see decide_stow); one that arrives here
            # was routed wrongly and is never forwarded to Orthanc.
            raise Refusal(405, "stow_not_here",
                          "STOW-RS is handled by the ingest gate, not by this route")
        raise Refusal(405, "method", f"method {method} is not allowed on DICOMweb")

    @staticmethod
    def authorize_scope(target: DicomWebTarget, claims: Claims) -> None:
        """The token's studies bound every request; for QIDO they are the study filter.

        Whatever a QIDO query says, a scoped token's search goes to Orthanc with
        the study filter the guard sets: the query's own filter if it names only
        studies in scope (else 403), the whole scope if it names none. A filter
        beside a study in the path must name that study (Orthanc would ignore it).
        """
        allowed = claims.studies
        if allowed is not None:
            if not allowed:
                raise Refusal(403, "scope", "the token covers no study")
            if target.study is not None and target.study not in allowed:
                raise Refusal(403, "scope", "the token does not cover this study")
        if target.kind != "qido":
            return
        named = target.study_filter
        if named is not None:
            if allowed is not None and any(uid not in allowed for uid in named):
                raise Refusal(403, "scope", "the query names studies the token does not cover")
            if target.study is not None:
                if set(named) != {target.study}:
                    raise Refusal(400, "study_filter_conflict",
                                  f"the path names study {target.study}; leave StudyInstanceUID "
                                  "out of the query or give that study")
                target.study_filter = None  # the path says it already
        elif allowed is not None and target.study is None:
            target.restrict_to(allowed)

    def decide(
        self, method: str, raw_path: str, raw_query: str, authorization: str | None
    ) -> Decision:
        target: DicomWebTarget | None = None
        claims: Claims | None = None
        try:
            target = parse(raw_path, raw_query)
            claims = self.authenticate(authorization, target.token)
            self.authorize_method(method, claims)
            self.authorize_scope(target, claims)
        except Refusal as refusal:
            claims = claims or getattr(refusal, "claims", None)
            detail = refusal.detail
            if target is not None and target.kind == "qido" and (target.query or target.study_filter):
                detail = f"{detail} (query: {target.query_string()})"
            return Decision(False, refusal.status, refusal.reason, detail, claims, target)
        redirect = target.internal_uri(INTERNAL_LOCATION, self.wado_plugin)
        # A search's audit row says what Orthanc was asked (the token is never in it).
        detail = "query: " + redirect.partition("?")[2] if target.kind == "qido" else ""
        return Decision(True, 200, "allowed", detail, claims=claims, target=target,
                        redirect=redirect)

    def decide_stow(self, raw_path: str, raw_query: str, authorization: str | None) -> Decision:
        """nginx's ``auth_request`` before a STOW-RS body is read: token, role, scope.

        Only ``POST /studies`` and ``POST /studies/{uid}`` store; only a bearer
        token (never a signed URL) may; a study-scoped token only into its
        studies. The ingest gate behind decides about each instance.
        """
        target: DicomWebTarget | None = None
        claims: Claims | None = None
        try:
            target = parse(raw_path, raw_query)
            if target.segments[0] != "studies" or len(target.segments) > 2:
                raise Refusal(405, "method", "STOW-RS stores to /studies or /studies/{uid} only")
            if target.token is not None:
                raise Refusal(403, "signed_url_stow", "a signed URL may not store images")
            claims = self.authenticate(authorization, None)
            if claims.typ != "access":
                raise Refusal(403, "signed_url_stow", "a signed URL's token may not store images")
            if claims.role not in IMAGE_WRITERS:
                raise Refusal(403, "role", f"role {claims.role} may not store images")
            if claims.studies is not None and target.study not in claims.studies:
                raise Refusal(403, "scope", "the token does not cover this study")
        except Refusal as refusal:
            claims = claims or getattr(refusal, "claims", None)
            return Decision(False, refusal.status, refusal.reason, refusal.detail, claims, target)
        return Decision(True, 200, "stow_authorized", claims=claims, target=target)
