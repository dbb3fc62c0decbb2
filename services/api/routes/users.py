"""Who am I, and (admins) who is there and adding people."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, HTTPException, Request, status
from pydantic import BaseModel, Field, field_validator
from sqlalchemy import select

from neuronova_lib.db.models import User
from neuronova_lib.db.revocation import revoke_user
from neuronova_lib.db.users import MIN_PASSWORD_LENGTH, UserExists, create_user, get_user
from neuronova_lib.security.roles import Role

from ..auditing import write_audit
from ..deps import AdminUser, CurrentUser, SessionDep

router = APIRouter(prefix="/users", tags=["users"])


class UserPublic(BaseModel):
    username: str
    role: str
    full_name: str | None = None


class UserAdminView(UserPublic):
    is_active: bool
    created_at: datetime

    @field_validator("created_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        # SQLite returns naive datetimes; every time the platform stores is UTC.
        return value if value.tzinfo else value.replace(tzinfo=UTC)


class UserCreate(BaseModel):
    username: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]*$")
    password: str = Field(min_length=MIN_PASSWORD_LENGTH)
    role: Role
    full_name: str | None = Field(default=None, max_length=128)
    is_active: bool = True


class UserChange(BaseModel):
    role: Role | None = None
    is_active: bool | None = None


@router.get("/me", response_model=UserPublic)
def read_me(user: CurrentUser) -> UserPublic:
    """The signed-in user, so a client can show who it is acting as."""
    return UserPublic(username=user.username, role=user.role, full_name=user.full_name)


@router.get("", response_model=list[UserAdminView])
def list_users(db: SessionDep, admin: AdminUser) -> list[UserAdminView]:
    """Every user, by username (admins only)."""
    users = db.scalars(select(User).order_by(User.username)).all()
    return [UserAdminView.model_validate(u, from_attributes=True) for u in users]


@router.post(
    "",
    response_model=UserAdminView,
    status_code=status.HTTP_201_CREATED,
    responses={409: {"description": "Username taken"}},
)
def add_user(
    request: Request, payload: UserCreate, db: SessionDep, admin: AdminUser
) -> UserAdminView:
    """Create a user (admins only); the creation is audited with the admin's name."""
    try:
        user = create_user(
            db, payload.username, payload.password, payload.role,
            full_name=payload.full_name, is_active=payload.is_active,
        )
    except UserExists:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            detail=f"user {payload.username!r} already exists; pick another username",
        ) from None
    except ValueError as exc:
        raise HTTPException(422, detail=str(exc)) from None
    write_audit(
        db, request, decision="allow", status=201, reason="user_created",
        username=admin.username, role=admin.role,
        detail=f"created {user.username!r} with role {user.role}",
    )
    db.commit()
    return UserAdminView.model_validate(user, from_attributes=True)


@router.patch("/{username}", response_model=UserAdminView,
              responses={404: {"description": "No such user"}})
def change_user(request: Request, username: str, payload: UserChange, db: SessionDep,
                admin: AdminUser) -> UserAdminView:
    """Disable or enable a user, or change their role (admins only; audited).

    Disabling revokes every token the user holds. Either change reaches the
    API at once and the guard within ``NEURONOVA_REVOCATION_BOUND`` seconds:
    a token whose role claim is no longer the user's role is refused there.
    """
    user = get_user(db, username)
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no user {username!r}")
    changes = []
    if payload.role is not None and payload.role.value != user.role:
        changes.append(f"role {user.role} -> {payload.role.value}")
        user.role = payload.role.value
    if payload.is_active is not None and payload.is_active != user.is_active:
        changes.append("enabled" if payload.is_active else "disabled")
        user.is_active = payload.is_active
        if not payload.is_active:
            revoke_user(db, username)
    write_audit(
        db, request, decision="allow", status=200, reason="user_changed",
        username=admin.username, role=admin.role,
        detail=f"{username!r}: {', '.join(changes) or 'no change'}",
    )
    db.commit()
    return UserAdminView.model_validate(user, from_attributes=True)
