"""Tables of the platform database. Alembic migrations in ``migrations/`` follow these."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import BigInteger, DateTime, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(32))
    full_name: Mapped[str | None] = mapped_column(String(128), nullable=True)
    is_active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    #: Tokens of this user issued before this time are refused (per-user revocation).
    tokens_not_before: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )


class RefreshToken(Base):
    """One row per refresh token handed out; a used or revoked one is refused."""

    __tablename__ = "refresh_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    username: Mapped[str] = mapped_column(String(64), index=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked: Mapped[bool] = mapped_column(default=False)
    #: The jti of the sign-in's first refresh token; every rotation keeps it, so
    #: sign-out revokes the whole chain (``None``: issued before families existed).
    family: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    #: The access token minted with this refresh token (sign-out revokes it too).
    access_jti: Mapped[str | None] = mapped_column(String(64), nullable=True)


class RevokedToken(Base):
    """A token refused before it expires (``neuronova tokens revoke``, sign-out).

    Kept until the token would have expired anyway, then pruned; the guard loads
    the unexpired ones into its revocation snapshot.
    """

    __tablename__ = "revoked_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    username: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    revoked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    reason: Mapped[str] = mapped_column(String(64))


class SignInFailure(Base):
    """Failed sign-ins of one account name, for per-account throttling across API workers.

    Keyed by the name as typed, whether or not such a user exists, so that the
    throttle itself does not tell which accounts exist.
    """

    __tablename__ = "sign_in_failures"

    username: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failure_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    blocked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class AuditRecord(Base):
    """One decision of the guard proxy, the API or the DICOM listener: who, what, allowed
    or not, and why. Allowed decisions are one row each; repeated refusals may share one
    row with a count (:class:`neuronova_lib.db.audit.AuditWriter`)."""

    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    service: Mapped[str] = mapped_column(String(16))
    username: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    role: Mapped[str | None] = mapped_column(String(32), nullable=True)
    method: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(Text)
    study: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    decision: Mapped[str] = mapped_column(String(8))  # "allow" | "deny"
    status: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(64))
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    client: Mapped[str | None] = mapped_column(String(64), nullable=True)
    token_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: nginx's $request_id: joins this record to the gateway's access log line.
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: How many decisions this row stands for: 1, or more for repeated refusals of one
    #: kind that the audit writer counts in one row (same service, user, client, reason,
    #: status and kind of path, beyond ``NEURONOVA_AUDIT_REPEAT_BURST`` within
    #: ``NEURONOVA_AUDIT_REPEAT_WINDOW``); ``time`` is the first of them.
    repeat_count: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    #: Time of the last decision folded into this row (``None`` while it stands for one).
    last_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    #: The JupyterHub server a kernel's token was issued to (``user/name``, from the
    #: token's ``act`` claim): which notebook read this.
    server: Mapped[str | None] = mapped_column(String(128), nullable=True, index=True)
    #: The MLflow run active in the reader (``X-NeuroNova-Run``, sent by neuronova_lib):
    #: which images trained which model.
    run_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)

    __table_args__ = (Index("ix_audit_decision_time", "decision", "time"),)


class Job(Base):
    """A background job of the API (an upload handed to the bulk transcoder)."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # uuid4 hex
    kind: Mapped[str] = mapped_column(String(16))  # "upload"
    state: Mapped[str] = mapped_column(String(16), index=True)  # queued|running|done|failed
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow,
                                                 index=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    file_count: Mapped[int] = mapped_column(Integer, default=0)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    #: The bulk run's summary (JSON text); set when the job ends.
    summary: Mapped[str | None] = mapped_column(Text, nullable=True)
    report_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class BrowserSession(Base):
    """A signed-in browser (cookie ``neuronova_session``), checked by nginx's ``auth_request``.

    The row is keyed by the SHA-256 of the session id, never the id itself: a
    copy of the database does not give anyone a session. Sign-out deletes the
    row; the user's state and role are read with it on every check.
    """

    __tablename__ = "browser_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    username: Mapped[str] = mapped_column(String(64), index=True)
    #: The role at sign-in: a session whose user's role changed since is refused.
    role: Mapped[str] = mapped_column(String(32))
    #: Synchronizer token for the platform's own forms (sign-out) in this session.
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    #: The absolute end (created + NEURONOVA_SESSION_TTL); idle end is last_seen + idle TTL.
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class CachedPatient(Base):
    """A patient as the chain last found it (FHIR R4 Patient JSON), keyed by DICOM Patient ID.

    ``fetched_at`` gives the entry its age: older than ``NEURONOVA_PATIENT_CACHE_TTL`` it
    is refreshed from the FHIR server (:mod:`neuronova_lib.patients.chain`).
    """

    __tablename__ = "patient_cache"

    patient_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    resource: Mapped[str] = mapped_column(Text)  # FHIR R4 Patient, JSON
    fhir_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    source: Mapped[str] = mapped_column(String(16))  # "fhir" | "openemr"
    fetched_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    family: Mapped[str | None] = mapped_column(String(128), nullable=True, index=True)


class FhirResource(Base):
    """The current version of one resource of the platform's FHIR R4 facade (``/fhir/R4``)."""

    __tablename__ = "fhir_resources"

    resource_type: Mapped[str] = mapped_column(String(40), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    last_updated: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    resource: Mapped[str] = mapped_column(Text)  # JSON, with id and meta


class FhirResourceVersion(Base):
    """Every version of every facade resource, for ``vread`` (``/_history/{vid}``)."""

    __tablename__ = "fhir_resource_versions"

    resource_type: Mapped[str] = mapped_column(String(40), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_updated: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    resource: Mapped[str] = mapped_column(Text)


class FhirSearchToken(Base):
    """One searchable value of a facade resource's current version (rebuilt on update).

    ``param`` is the FHIR search parameter (identifier, name, family, birthdate, gender,
    subject, patient, status, code); ``system`` is set for token parameters.
    """

    __tablename__ = "fhir_search_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    resource_type: Mapped[str] = mapped_column(String(40))
    resource_id: Mapped[str] = mapped_column(String(64))
    param: Mapped[str] = mapped_column(String(32))
    system: Mapped[str | None] = mapped_column(String(255), nullable=True)
    value: Mapped[str] = mapped_column(String(255))

    __table_args__ = (
        Index("ix_fhir_search_lookup", "resource_type", "param", "value"),
        Index("ix_fhir_search_resource", "resource_type", "resource_id"),
    )


class FhirIdentifierClaim(Base):
    """Who holds an identifier: a conditional create inserts its claim in the same
    transaction as the resource, so two concurrent creates of one patient (two API
    workers, two processes) make one resource; the loser finds the winner's."""

    __tablename__ = "fhir_identifier_claims"

    resource_type: Mapped[str] = mapped_column(String(40), primary_key=True)
    system: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[str] = mapped_column(String(255), primary_key=True)
    resource_id: Mapped[str] = mapped_column(String(64))


class InferenceJob(Base):
    """One inference job: a study, the model that served it, and what it wrote.

    Lists and figures are JSON text: ``stages`` (progress events in order, for
    the dashboards' event stream), ``timings`` (seconds per stage),
    ``volumes`` (ml per region), ``source_series`` (channel → SeriesInstanceUID).
    """

    __tablename__ = "inference_jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # uuid4 hex
    state: Mapped[str] = mapped_column(String(16), index=True)  # queued|running|done|failed
    created_by: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(32))
    study_uid: Mapped[str] = mapped_column(String(64))
    model_name: Mapped[str] = mapped_column(String(128))
    model_version: Mapped[str | None] = mapped_column(String(32), nullable=True)
    model_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    model_uri: Mapped[str] = mapped_column(Text)
    rerun: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow,
                                                 index=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    stages: Mapped[str] = mapped_column(Text, default="[]")
    timings: Mapped[str | None] = mapped_column(Text, nullable=True)
    volumes: Mapped[str | None] = mapped_column(Text, nullable=True)
    source_series: Mapped[str | None] = mapped_column(Text, nullable=True)
    seg_series_uid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    seg_sop_uid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    sr_series_uid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    sr_sop_uid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (
        # "the same study and champion": the lookup behind POST /api/inference's dedupe.
        Index("ix_inference_jobs_study_model", "study_uid", "model_name", "model_version"),
    )


class ModelApproval(Base):
    """One decision of the model promotion gate that moved the ``champion`` alias.

    The platform serves a model version only while the newest row for its model names that
    version and its run (:func:`neuronova_lib.ai.registry.served_version`): an alias moved
    any other way is never served. ``kind`` is ``promote`` (the version met the gate) or
    ``rollback`` (the previous champion restored). Refused promotions are audit records.
    """

    __tablename__ = "model_approvals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_name: Mapped[str] = mapped_column(String(255), index=True)
    version: Mapped[str] = mapped_column(String(32))
    run_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # "promote" | "rollback"
    #: The version's source in MLflow (``models:/m-...``) and its logged model id.
    source: Mapped[str | None] = mapped_column(Text, nullable=True)
    model_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: sha256 over the model's artifact files (path and content), as approved.
    artifact_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    approved_by: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(32))
    approved_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    reason: Mapped[str] = mapped_column(Text)
    #: JSON: the held-out figures the decision was made on.
    figures: Mapped[str] = mapped_column(Text)
    #: JSON: thresholds and tolerance in force, and the champion's figures compared with.
    criteria: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: The champion this decision replaced (``None``: the first one).
    replaced_version: Mapped[str | None] = mapped_column(String(32), nullable=True)
    #: The version kept as alias ``previous``: what ``neuronova models rollback`` restores
    #: (after a promotion the replaced champion; after a rollback the restored version's
    #: own previous, so that rollbacks walk back through the approvals).
    previous_version: Mapped[str | None] = mapped_column(String(32), nullable=True)
    previous_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)

    __table_args__ = (Index("ix_model_approvals_name_id", "model_name", "id"),)
