"""Revoking tokens before they expire, and what the guard knows about it.

Three ways a token stops working early, besides retiring its signing key:

* by ``jti`` — one token (``neuronova tokens revoke --jti``, sign-out); revoking
  an access token also revokes the signed URLs it minted (their ``pjti``);
* by user — every token issued before a time (``users.tokens_not_before``):
  ``neuronova tokens revoke --user``, or an admin disabling the account;
* by the user database — a disabled or deleted account, or a role that is no
  longer the one the token carries.

The API checks these against the database on every request. The guard cannot
afford a query per frame: it keeps a :class:`RevocationSnapshot` that a
:class:`RevocationWatcher` thread reloads every half of
``NEURONOVA_REVOCATION_BOUND``; a snapshot older than the bound refuses
everything (fail closed), so no decision rests on data older than the bound.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, Engine, delete, select, update
from sqlalchemy.orm import Session

from ..security.tokens import LEEWAY_S, Claims
from .models import RefreshToken, RevokedToken, User

log = logging.getLogger(__name__)


def epoch(value: datetime | None) -> float:
    """Seconds since the epoch; SQLite hands back naive datetimes, which are UTC here."""
    if value is None:
        return 0.0
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


@dataclass(frozen=True)
class Refused:
    """Why a token is refused: HTTP status, audit reason, and what the holder can do."""

    status: int
    reason: str
    detail: str


#: Tokens carry ``iat`` rounded to the millisecond (security.tokens), so one minted up to
#: half a millisecond before a snapshot can look newer than it. A token counts as newer
#: only beyond this margin: one minted just after is judged by the snapshot (failing
#: closed until the next reload) rather than one minted just before escaping it.
IAT_ROUNDING_S = 0.001


@dataclass(frozen=True)
class RevocationSnapshot:
    """The user database and the revoked jtis as of ``taken_at`` (monotonic seconds).

    ``users`` maps a username to ``(role, is_active, tokens_not_before)``;
    ``taken_wall`` is the same moment on the wall clock, which token ``iat``s use.
    """

    users: dict[str, tuple[str, bool, float]]
    revoked: frozenset[str]
    taken_at: float = field(default_factory=time.monotonic)
    taken_wall: float = field(default_factory=time.time)

    def refusal(self, claims: Claims) -> Refused | None:
        """Why these claims are no longer good (account first, then token), or ``None``.

        A token issued after the snapshot was taken is newer than anything the
        snapshot knows (a user created, re-enabled or re-roled since, who signed
        in): the API minted it from the database as it was then, so it passes
        until the next reload judges it.
        """
        if claims.iat > self.taken_wall + IAT_ROUNDING_S:
            return None
        return self.account_refusal(claims) or self.token_revoked(claims)

    def account_refusal(self, claims: Claims) -> Refused | None:
        """The account is gone, disabled, or no longer has the token's role."""
        user = self.users.get(claims.sub)
        if user is None:
            return Refused(401, "unknown_user",
                           f"user {claims.sub!r} does not exist (any more); sign in again")
        role, active, _ = user
        if not active:
            return Refused(401, "user_disabled",
                           f"account {claims.sub!r} is disabled; ask an administrator")
        if role != claims.role:
            return Refused(401, "role_changed",
                           f"your role is now {role}, not {claims.role}; sign in again")
        return None

    def token_revoked(self, claims: Claims) -> Refused | None:
        """The token was revoked by jti (or its parent was), or by user."""
        if claims.jti in self.revoked or (claims.parent and claims.parent in self.revoked):
            return Refused(401, "revoked", "this token was revoked; sign in again")
        user = self.users.get(claims.sub)
        if user is not None and claims.iat < user[2]:
            return Refused(401, "revoked_user",
                           "every token of this account issued before "
                           f"{datetime.fromtimestamp(user[2], UTC):%Y-%m-%d %H:%M:%S}Z "
                           "was revoked; sign in again")
        return None


def load_snapshot(conn: Connection, usernames: Iterable[str] | None = None,
                  jtis: Iterable[str] | None = None) -> RevocationSnapshot:
    """Read a snapshot: every user and unexpired revoked jti, or only those named.

    The guard loads it all in the background; ``/api/pacs/sign`` and the API
    load one user and one or two jtis per request (:func:`token_refusal`).
    """
    taken_at, taken_wall = time.monotonic(), time.time()
    users = select(User.username, User.role, User.is_active, User.tokens_not_before)
    revoked = select(RevokedToken.jti).where(RevokedToken.expires_at > datetime.now(UTC))
    if usernames is not None:
        users = users.where(User.username.in_(list(usernames)))
    if jtis is not None:
        revoked = revoked.where(RevokedToken.jti.in_(list(jtis)))
    return RevocationSnapshot(
        users={name: (role, bool(active), epoch(nbf))
               for name, role, active, nbf in conn.execute(users)},
        revoked=frozenset(conn.scalars(revoked)),
        taken_at=taken_at,
        taken_wall=taken_wall,
    )


def token_refusal(conn: Connection, claims: Claims, account: bool = True) -> Refused | None:
    """Check one token against the database now (routes that are not on the frame path).

    ``account=False`` checks only the token's revocation (by jti or by user), for
    the API, which reads the account's state and role from the database itself.
    """
    jtis = [claims.jti] + ([claims.parent] if claims.parent else [])
    snapshot = load_snapshot(conn, usernames=[claims.sub], jtis=jtis)
    return snapshot.refusal(claims) if account else snapshot.token_revoked(claims)


class RevocationWatcher:
    """Keeps a fresh :class:`RevocationSnapshot` for the guard, reloaded in a thread.

    Parameters
    ----------
    engine
        The platform database.
    bound
        Seconds a decision may lag behind the database (``NEURONOVA_REVOCATION_BOUND``).
        The snapshot is reloaded every ``bound / 2``; once it is older than
        ``bound`` (the database cannot be read) every token is refused with 503.
    """

    def __init__(self, engine: Engine, bound: float) -> None:
        self._engine = engine
        self.bound = bound
        self._snapshot: RevocationSnapshot | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def reload(self) -> RevocationSnapshot:
        with self._engine.connect() as conn:
            snapshot = load_snapshot(conn)
        self._snapshot = snapshot
        return snapshot

    def _run(self) -> None:
        while not self._stop.wait(self.bound / 2):
            try:
                self.reload()
            except Exception:  # keep trying; stale snapshots fail closed meanwhile
                log.exception("could not reload the revocation snapshot")

    def start(self) -> None:
        """Load once now (a failure is logged, then retried) and keep reloading."""
        try:
            self.reload()
        except Exception:
            log.exception("could not load the revocation snapshot; refusing tokens until it loads")
        self._thread = threading.Thread(target=self._run, name="revocation-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.bound)

    def age(self) -> float:
        """Seconds since the current snapshot was read (the bound if none is loaded)."""
        snapshot = self._snapshot
        return self.bound if snapshot is None else time.monotonic() - snapshot.taken_at

    def refusal(self, claims: Claims) -> Refused | None:
        """The hot path: dictionary lookups in the current snapshot, no I/O."""
        snapshot = self._snapshot
        if snapshot is None or time.monotonic() - snapshot.taken_at > self.bound:
            return Refused(503, "revocation_stale",
                           "the guard cannot read the user database just now; try again shortly")
        return snapshot.refusal(claims)


# -- changing -------------------------------------------------------------------------------


def _prune(session: Session) -> None:
    """Forget revocations of tokens that have expired anyway."""
    horizon = datetime.now(UTC) - timedelta(seconds=LEEWAY_S)
    session.execute(delete(RevokedToken).where(RevokedToken.expires_at < horizon))


def revoke_jti(session: Session, jti: str, *, expires_at: datetime, reason: str,
               username: str | None = None) -> bool:
    """Record one revoked jti (the caller commits); ``False`` if it was already revoked.

    A refresh token's jti revokes its whole family (see :func:`revoke_family`).
    """
    _prune(session)
    refresh = session.get(RefreshToken, jti)
    if refresh is not None:
        revoke_family(session, refresh.family or refresh.jti, reason=reason,
                      access_ttl=0, expires_at=expires_at)
    if session.get(RevokedToken, jti) is not None:
        return False
    session.add(RevokedToken(jti=jti, username=username, reason=reason[:64],
                             expires_at=expires_at + timedelta(seconds=LEEWAY_S)))
    session.flush()
    return True


def revoke_family(session: Session, family: str, *, reason: str, access_ttl: float,
                  expires_at: datetime | None = None) -> int:
    """Revoke a sign-in's refresh chain and the access tokens minted with it.

    Returns how many refresh tokens were revoked. ``access_ttl`` bounds how long
    those access tokens can still be alive (their revocations are kept that long).
    """
    rows = session.scalars(select(RefreshToken).where(
        (RefreshToken.family == family) | (RefreshToken.jti == family))).all()
    until = expires_at or datetime.now(UTC) + timedelta(seconds=access_ttl)
    for row in rows:
        row.revoked = True
        if row.access_jti and session.get(RevokedToken, row.access_jti) is None:
            session.add(RevokedToken(jti=row.access_jti, username=row.username,
                                     reason=reason[:64],
                                     expires_at=until + timedelta(seconds=LEEWAY_S)))
    session.flush()
    return len(rows)


def revoke_user(session: Session, username: str, *, at: datetime | None = None) -> User:
    """Refuse every token ``username`` holds now (access, refresh, signed URLs).

    Tokens issued later work. The caller commits.

    Raises
    ------
    LookupError
        No such user.
    """
    user = session.scalars(select(User).where(User.username == username)).first()
    if user is None:
        raise LookupError(f"no user {username!r}")
    user.tokens_not_before = at or datetime.now(UTC)
    session.execute(update(RefreshToken).where(RefreshToken.username == username)
                    .values(revoked=True))
    session.flush()
    return user
