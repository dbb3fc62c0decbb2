"""Platform users: argon2 password hashes, sign-in, and the demo accounts.

Passwords are stored as argon2id hashes (argon2-cffi's defaults, RFC 9106's
low-memory profile); a hash made with older parameters is upgraded the next
time its owner signs in. Functions that take a ``Session`` add or change rows
and leave the commit to the caller, so a route can commit a user change and its
audit record together.
"""

from __future__ import annotations

import logging
import re
import secrets
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..config import Settings
from ..security.roles import Role
from ..security.secret_store import new_password, read_or_create_json, write_private_json
from .engine import session_factory
from .migrate import upgrade_database
from .models import User

log = logging.getLogger(__name__)

_hasher = PasswordHasher()
_dummy_hash: str | None = None

#: Usernames go into audit records, URLs and log lines: keep them plain.
USERNAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
MIN_PASSWORD_LENGTH = 8

#: The demo accounts ``ensure_demo_users`` creates: username -> role.
DEMO_USERS: dict[str, Role] = {
    "clinician": Role.clinician,
    "scientist": Role.scientist,
    "owner": Role.model_owner,
    "admin": Role.admin,
}
DEMO_USERS_FILE = "demo-users.json"


class UserExists(ValueError):
    """A user with that username is already there."""


def hash_password(password: str) -> str:
    """An argon2id hash of ``password`` (with its own salt and parameters)."""
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """Whether ``password`` matches ``password_hash``; a malformed hash never matches."""
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def _check_username(username: str) -> None:
    if not USERNAME_PATTERN.match(username):
        raise ValueError(
            f"username {username!r} is not allowed: use 1-64 letters, digits, '_', '.', '@' "
            "or '-', starting with a letter or digit."
        )


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"password is too short: use at least {MIN_PASSWORD_LENGTH} characters.")


def get_user(session: Session, username: str) -> User | None:
    """The user called ``username``, or ``None``."""
    return session.scalars(select(User).where(User.username == username)).first()


def create_user(
    session: Session,
    username: str,
    password: str,
    role: Role | str,
    full_name: str | None = None,
    is_active: bool = True,
) -> User:
    """Add a user (flushed, not committed).

    Parameters
    ----------
    session
        Open session; the caller commits.
    username
        1-64 characters of ``[A-Za-z0-9_.@-]``, starting with a letter or digit.
    password
        At least :data:`MIN_PASSWORD_LENGTH` characters; stored as an argon2 hash.
    role
        One of :class:`~neuronova_lib.security.roles.Role`.
    full_name, is_active
        Shown to people; an inactive user cannot sign in.

    Raises
    ------
    ValueError
        Bad username, short password or unknown role (the message says which).
    UserExists
        The username is taken.
    """
    _check_username(username)
    _check_password(password)
    try:
        role = Role(role)
    except ValueError:
        raise ValueError(
            f"unknown role {role!r}: use one of {', '.join(r.value for r in Role)}."
        ) from None
    if get_user(session, username) is not None:
        raise UserExists(f"user {username!r} already exists")
    user = User(
        username=username,
        password_hash=hash_password(password),
        role=role.value,
        full_name=full_name,
        is_active=is_active,
    )
    session.add(user)
    session.flush()
    return user


def set_password(session: Session, user: User | str, password: str) -> User:
    """Give ``user`` (a ``User`` or a username) a new password (not committed).

    Raises
    ------
    LookupError
        No such user.
    ValueError
        The password is too short.
    """
    _check_password(password)
    if isinstance(user, str):
        found = get_user(session, user)
        if found is None:
            raise LookupError(f"no user {user!r}")
        user = found
    user.password_hash = hash_password(password)
    session.flush()
    return user


def authenticate(session: Session, username: str, password: str) -> User | None:
    """The user whose username and password these are, else ``None``.

    An inactive user with the right password is returned: the caller decides
    (the API answers it exactly like a wrong password, so the answer is no
    password oracle; the audit log says which).
    When the user does not exist a dummy hash is still verified, so that the
    response time does not tell which usernames exist. A hash with outdated
    argon2 parameters is replaced (the caller commits).
    """
    global _dummy_hash
    user = get_user(session, username)
    if user is None:
        if _dummy_hash is None:
            _dummy_hash = _hasher.hash(secrets.token_urlsafe(16))
        verify_password(_dummy_hash, password)
        return None
    if not verify_password(user.password_hash, password):
        return None
    if user.is_active and _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    return user


def _recorded_passwords(data: dict[str, Any]) -> dict[str, str]:
    """``{username: password}`` from ``demo-users.json``, either format.

    The current format gives each user its own ``password``; files written
    before it held one top-level ``password`` shared by every demo user.
    """
    shared = data.get("password")
    return {
        str(u["username"]): str(u.get("password") or shared)
        for u in data.get("users", [])
        if u.get("password") or shared
    }


def demo_password(settings: Settings, username: str) -> str:
    """The password of demo user ``username``, read from ``demo-users.json``.

    Raises
    ------
    LookupError
        No such demo user in the file, or no file (the demo users were not made here).
    """
    path = settings.home / DEMO_USERS_FILE
    if not path.exists():
        raise LookupError(f"{path} is missing: run `neuronova up` once to make the demo users")
    passwords = _recorded_passwords(read_or_create_json(path, dict))
    if username not in passwords:
        raise LookupError(f"{username!r} is not a demo user in {path} "
                          f"(those are {', '.join(sorted(passwords))})")
    return passwords[username]


def ensure_demo_users(settings: Settings) -> dict[str, str] | None:
    """Create one demo user per role and say their passwords; idempotent.

    The users are ``clinician``, ``scientist``, ``owner`` (role
    ``model_owner``) and ``admin``. Each gets its own generated password, so
    the admin's is never known to the other roles; ``settings.demo_password``
    (``NEURONOVA_DEMO_PASSWORD``), meant for scripted demos only, gives them
    all that one password instead. Usernames, roles and passwords are written
    to ``$NEURONOVA_HOME/demo-users.json`` (mode 0600), the one place a person
    looks them up: ``{"users": [{"username", "role", "password"}, ...]}``.

    A second call changes nothing: it returns what the file says, even if
    ``NEURONOVA_DEMO_PASSWORD`` changed since (use :func:`set_password` to
    change a password). The database schema is brought up to date first.

    Returns
    -------
    dict[str, str] | None
        ``{username: password}`` of the demo users; ``None`` when the demo users
        already exist but ``demo-users.json`` is gone, so their passwords are not
        known here (nothing is reset; missing demo users are not created).
    """
    upgrade_database(settings.sqlalchemy_url)
    path = settings.home / DEMO_USERS_FILE
    sessions = session_factory(settings.sqlalchemy_url)
    recorded: dict[str, Any] = {}
    with sessions() as session:
        existing = {
            u.username
            for u in session.scalars(select(User).where(User.username.in_(list(DEMO_USERS))))
        }
        if path.exists():
            recorded = read_or_create_json(path, dict)
            passwords = _recorded_passwords(recorded)
        elif existing:
            log.warning(
                "demo users %s exist but %s is missing: their passwords are unknown; "
                "set them with neuronova_lib.db.users.set_password",
                sorted(existing),
                path,
            )
            return None
        else:
            passwords = {}
        shared = settings.demo_password
        if shared is not None and len(shared) < MIN_PASSWORD_LENGTH:
            raise ValueError(
                f"NEURONOVA_DEMO_PASSWORD is too short: use at least "
                f"{MIN_PASSWORD_LENGTH} characters, or unset it to get generated ones."
            )
        created = [name for name in DEMO_USERS if name not in existing]
        for name in created:
            password = passwords.get(name) or shared or new_password()
            passwords[name] = password
            create_user(
                session, name, password, DEMO_USERS[name], full_name=f"Demo {name.title()}"
            )
        session.commit()
    if created or not path.exists() or "password" in recorded:
        write_private_json(
            path,
            {
                "users": [
                    {"username": name, "role": role.value, "password": passwords[name]}
                    for name, role in DEMO_USERS.items()
                    if name in passwords
                ],
                "note": "Demo accounts for a local run; do not use them in a deployment.",
            },
        )
        log.info("demo users ready: %s (credentials in %s)", ", ".join(DEMO_USERS), path)
    return {name: passwords[name] for name in DEMO_USERS if name in passwords}
