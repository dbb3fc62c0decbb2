"""Per-account sign-in throttling, kept in the database so every API worker sees it.

After ``signin_free_failures`` failed sign-ins of one account name, each further
failure makes that name wait before the next try: 1 s, 2 s, 4 s, ... up to
``signin_delay_max``. While it waits, the API answers 429 with ``Retry-After``
without checking the password, so guessing online is slowed per account, not
only per address (nginx limits per address). A success, or
``signin_failure_window`` seconds without a failure, starts the count again.

The name is counted as typed, whether or not such a user exists, and a disabled
account counts like a wrong password: the throttle tells nothing about which
accounts exist or are active.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, delete, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..config import Settings
from .models import SignInFailure
from .revocation import epoch

KEY_LENGTH = 64


def _key(username: str) -> str:
    return username[:KEY_LENGTH]


def delay_after(failures: int, settings: Settings) -> float:
    """Seconds an account waits after its ``failures``-th failure in a row."""
    over = failures - settings.signin_free_failures
    if over <= 0:
        return 0.0
    return float(min(settings.signin_delay_max, 2.0 ** min(over - 1, 30)))


def retry_after(session: Session, username: str, now: datetime | None = None) -> float:
    """Seconds ``username`` must still wait before a sign-in is tried (0: go ahead)."""
    row = session.get(SignInFailure, _key(username))
    if row is None or row.blocked_until is None:
        return 0.0
    now = now or datetime.now(UTC)
    return max(0.0, epoch(row.blocked_until) - now.timestamp())


def record_failure(session: Session, username: str, settings: Settings,
                   now: datetime | None = None) -> float:
    """Count one failed sign-in; return the wait it imposes (s). The caller commits.

    Atomic across workers: the count is incremented in SQL, not read and rewritten.
    """
    now = now or datetime.now(UTC)
    key = _key(username)
    window_start = now - timedelta(seconds=settings.signin_failure_window)
    # Old failures are forgotten (this name's and anybody's, so the table stays small).
    session.execute(delete(SignInFailure).where(SignInFailure.last_failure_at < window_start))
    bumped = session.execute(
        update(SignInFailure).where(SignInFailure.username == key)
        .values(failures=SignInFailure.failures + 1, last_failure_at=now))
    if cast("CursorResult[Any]", bumped).rowcount == 0:
        try:
            with session.begin_nested():
                session.add(SignInFailure(username=key, failures=1, last_failure_at=now))
        except IntegrityError:  # another worker counted the first failure at the same time
            session.execute(
                update(SignInFailure).where(SignInFailure.username == key)
                .values(failures=SignInFailure.failures + 1, last_failure_at=now))
    row = session.get(SignInFailure, key, populate_existing=True)
    assert row is not None
    wait = delay_after(row.failures, settings)
    row.blocked_until = now + timedelta(seconds=wait) if wait else None
    session.flush()
    return wait


def clear(session: Session, username: str) -> None:
    """A successful sign-in: the account's count starts again. The caller commits."""
    session.execute(delete(SignInFailure).where(SignInFailure.username == _key(username)))
