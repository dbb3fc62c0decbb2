"""Server-side browser sessions: start, check (the hot path of nginx's ``auth_request``), end.

A session id is 256 random bits handed to the browser once, in the cookie
``neuronova_session``; the database keeps only its SHA-256, so neither a copy of
the database nor its backups hold a usable session. A session ends

* when its owner signs out (the row is deleted),
* ``NEURONOVA_SESSION_IDLE_TTL`` seconds after its last use,
* ``NEURONOVA_SESSION_TTL`` seconds after sign-in, however active,
* when its user is disabled or deleted, gets another role, or has every token
  revoked (``neuronova tokens revoke --user``): the same account rules the
  guard applies to tokens (:class:`~neuronova_lib.db.revocation.RevocationSnapshot`),
  read in the same query as the session.

:func:`check_session` is one ``SELECT`` (session joined with its user); it writes
``last_seen`` only when the stored value is older than
``NEURONOVA_SESSION_TOUCH_INTERVAL``, so a page that loads fifty assets costs one
write a minute, not fifty. The idle timeout is therefore exact to within that
interval.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from ..config import Settings
from ..security.roles import Role
from ..security.tokens import Claims
from .models import BrowserSession, User
from .revocation import Refused, RevocationSnapshot, epoch

COOKIE_NAME = "neuronova_session"


def session_hash(session_id: str) -> str:
    """The key a session is stored under: SHA-256 of its id, hex."""
    return hashlib.sha256(session_id.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass(frozen=True)
class ActiveSession:
    """A session that passed :func:`check_session`."""

    username: str
    role: str
    csrf_token: str
    id_hash: str


def session_token_parent(id_hash: str) -> str:
    """The ``pjti`` of tokens minted for a browser session (the OHIF link's study token):
    sign-out revokes this value, and with it every such token (the revocation snapshot
    refuses a token whose parent is revoked)."""
    return "session:" + id_hash[:40]


def start_session(db: Session, user: User, settings: Settings,
                  now: datetime | None = None) -> tuple[str, BrowserSession]:
    """Add a session for ``user`` (the caller commits); returns the id for the cookie.

    Expired sessions of anybody are deleted on the way, so the table holds only
    live ones without a separate sweeper.
    """
    now = now or datetime.now(UTC)
    idle_horizon = now - timedelta(seconds=settings.session_idle_ttl)
    db.execute(delete(BrowserSession).where(
        (BrowserSession.expires_at < now) | (BrowserSession.last_seen < idle_horizon)))
    session_id = secrets.token_urlsafe(32)
    row = BrowserSession(
        id_hash=session_hash(session_id),
        username=user.username,
        role=user.role,
        csrf_token=secrets.token_urlsafe(24),
        created_at=now,
        last_seen=now,
        expires_at=now + timedelta(seconds=settings.session_ttl),
    )
    db.add(row)
    db.flush()
    return session_id, row


def end_session(db: Session, session_id: str) -> str | None:
    """Delete the session (sign-out); returns its username, ``None`` if there was none."""
    key = session_hash(session_id)
    username = db.scalar(select(BrowserSession.username).where(BrowserSession.id_hash == key))
    db.execute(delete(BrowserSession).where(BrowserSession.id_hash == key))
    return username


def check_session(db: Session, session_id: str, settings: Settings,
                  now: datetime | None = None) -> ActiveSession | Refused:
    """The live session for this cookie value, or why it is refused (401, with a reason).

    A refused session that still has a row (expired, idle, account changed) is
    deleted; the caller commits either way.
    """
    return check_session_key(db, session_hash(session_id), settings, now)


def session_key_of_parent(db: Session, parent: str) -> str | None:
    """The session (its ``id_hash``) whose tokens carry ``parent`` as their ``pjti``
    (:func:`session_token_parent`), if that session still has a row."""
    prefix = parent.removeprefix("session:")
    if not parent.startswith("session:") or len(prefix) != 40 or not prefix.isalnum():
        return None
    return db.scalar(select(BrowserSession.id_hash)
                     .where(BrowserSession.id_hash.startswith(prefix, autoescape=True)))


def check_session_key(db: Session, key: str, settings: Settings,
                      now: datetime | None = None) -> ActiveSession | Refused:
    """:func:`check_session` for a session known by its ``id_hash`` (a token minted for
    it, :func:`session_key_of_parent`), not by its cookie."""
    now = now or datetime.now(UTC)
    row = db.execute(
        select(BrowserSession.username, BrowserSession.role, BrowserSession.csrf_token,
               BrowserSession.created_at, BrowserSession.last_seen, BrowserSession.expires_at,
               User.role, User.is_active, User.tokens_not_before)
        .join(User, User.username == BrowserSession.username, isouter=True)
        .where(BrowserSession.id_hash == key)
    ).first()
    if row is None:
        return Refused(401, "session_unknown",
                       "not signed in (no such session: signed out, expired or forged); "
                       "sign in again")
    (username, role, csrf, created, last_seen, expires,
     user_role, active, not_before) = row
    refused: Refused | None = None
    if epoch(expires) <= now.timestamp():
        refused = Refused(401, "session_expired",
                          f"your session ended {settings.session_ttl} s after sign-in "
                          "(NEURONOVA_SESSION_TTL); sign in again")
    elif now.timestamp() - epoch(last_seen) > settings.session_idle_ttl:
        refused = Refused(401, "session_idle",
                          f"your session was unused for over {settings.session_idle_ttl} s "
                          "(NEURONOVA_SESSION_IDLE_TTL); sign in again")
    else:
        # The guard's account rules, on the user row read with the session.
        users = {} if user_role is None else {username: (user_role, bool(active),
                                                         epoch(not_before))}
        claims = Claims(sub=username, role=Role(role), typ="session", jti=key,
                        exp=epoch(expires), kid="", iat=epoch(created))
        snapshot = RevocationSnapshot(users=users, revoked=frozenset(),
                                      taken_wall=now.timestamp() + 1)
        refused = snapshot.refusal(claims)
    if refused is not None:
        db.execute(delete(BrowserSession).where(BrowserSession.id_hash == key))
        return refused
    if now.timestamp() - epoch(last_seen) >= settings.session_touch_interval:
        db.execute(update(BrowserSession).where(BrowserSession.id_hash == key)
                   .values(last_seen=now))
    return ActiveSession(username=username, role=role, csrf_token=csrf, id_hash=key)
