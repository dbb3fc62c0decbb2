"""The promotion gate: the only way a model version becomes the platform's ``champion``.

A version is promoted when its training run's held-out figures (``heldout_dice_tc``,
``_wt``, ``_et``, and ``heldout_hd95_*``) meet the thresholds in the settings
(``NEURONOVA_GATE_MIN_DICE_*``, ``NEURONOVA_GATE_MAX_HD95``) and no region's Dice is lower
than the current champion's by more than ``NEURONOVA_GATE_TOLERANCE``. The current champion
is the one the platform database approved last, not whatever MLflow's alias says.

A promotion writes an approval record (:class:`~neuronova_lib.db.models.ModelApproval`),
tags the version (``neuronova.approved_by``, ``.approved_at``, ``.approval_id``), keeps the
replaced champion as alias ``previous`` and moves ``champion``; :func:`rollback` restores the
previous champion as an approval of kind ``rollback``. Every promotion, refusal and
rollback is an audit record, committed with the approval. One gate decision runs at a time
(a file lock in the data dir), so two promotions cannot both replace the same champion.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from ..config import Settings
from ..db.models import ModelApproval
from ..filelock import exclusive_file_lock
from ..security.roles import Role
from . import registry
from .registry import (
    CHAMPION,
    PREVIOUS,
    TAG_APPROVAL_ID,
    TAG_APPROVED_AT,
    TAG_APPROVED_BY,
    ModelNotFound,
    RegistryError,
    RegistryUnavailable,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

REGIONS = ("tc", "wt", "et")
DICE = {r: f"heldout_dice_{r}" for r in REGIONS}
HD95 = {r: f"heldout_hd95_{r}" for r in REGIONS}
#: Any fixed number, shared by every process that runs the gate on one PostgreSQL database.
_PG_GATE_LOCK = 0x4E4E4754  # "NNGT"
#: Roles that may promote and roll back.
PROMOTERS = frozenset({Role.model_owner, Role.admin})

#: ``audit(decision, status, reason, detail)``: adds one audit record to the gate's session
#: (the API passes its request's writer, the CLI its own); the gate commits it.
AuditHook = Callable[[str, int, str, str], None]


class GateRefused(RegistryError):
    """The gate refused; ``code`` says why in one word, the message in full."""

    def __init__(self, code: str, message: str, failures: list["Failure"] | None = None,
                 status: int = 409) -> None:
        super().__init__(message)
        self.code = code
        self.failures = failures or []
        self.status = status


@dataclass(frozen=True)
class Actor:
    """Who asks: a platform user and the role the platform database gives them."""

    username: str
    role: str


@dataclass(frozen=True)
class Criteria:
    """What a candidate must meet: thresholds and the tolerance against the champion."""

    min_dice: dict[str, float]
    max_hd95: float | None
    tolerance: float

    @classmethod
    def from_settings(cls, settings: Settings) -> "Criteria":
        return cls(min_dice={"tc": settings.gate_min_dice_tc, "wt": settings.gate_min_dice_wt,
                             "et": settings.gate_min_dice_et},
                   max_hd95=settings.gate_max_hd95, tolerance=settings.gate_tolerance)


@dataclass(frozen=True)
class Failure:
    """One figure that fails the gate: its value, the limit, by how much, against what."""

    figure: str
    value: float | None
    limit: float | None
    by: float | None
    against: str  # "missing" | "threshold" | "champion"
    message: str


def _r(x: float) -> str:
    return f"{x:.4f}".rstrip("0").rstrip(".") if x == x else "nan"


def check(figures: dict[str, float], criteria: Criteria,
          champion: dict[str, float] | None = None, champion_version: str | None = None
          ) -> list[Failure]:
    """Every way ``figures`` fail ``criteria`` (and the champion's figures); empty: passes.

    Dice: higher is better, each region at least its threshold and at least the champion's
    minus the tolerance. HD95 (mm): lower is better, at most the cap when one is set.
    A figure that is missing or not a number fails.
    """
    failures: list[Failure] = []
    for region in REGIONS:
        key = DICE[region]
        value = figures.get(key)
        if value is None or value != value:
            failures.append(Failure(key, value, criteria.min_dice[region], None, "missing",
                                    f"{key} is missing from the run: evaluate the model on "
                                    "held-out cases in its training run"))
            continue
        limit = criteria.min_dice[region]
        if value < limit:
            failures.append(Failure(key, value, limit, limit - value, "threshold",
                                    f"{key} {_r(value)} is below the threshold {_r(limit)} "
                                    f"by {_r(limit - value)}"))
        if champion is not None and champion.get(key) is not None:
            floor = champion[key] - criteria.tolerance
            if value < floor:
                failures.append(Failure(
                    key, value, floor, floor - value, "champion",
                    f"{key} {_r(value)} is worse than the champion's (version "
                    f"{champion_version}) {_r(champion[key])} by {_r(champion[key] - value)}, "
                    f"beyond the tolerance {_r(criteria.tolerance)} by {_r(floor - value)}"))
    if criteria.max_hd95 is not None:
        for region in REGIONS:
            key = HD95[region]
            value = figures.get(key)
            if value is None or value != value:
                failures.append(Failure(key, value, criteria.max_hd95, None, "missing",
                                        f"{key} is missing from the run, and "
                                        "NEURONOVA_GATE_MAX_HD95 asks for it"))
            elif value > criteria.max_hd95:
                failures.append(Failure(
                    key, value, criteria.max_hd95, value - criteria.max_hd95, "threshold",
                    f"{key} {_r(value)} mm is above the cap {_r(criteria.max_hd95)} mm by "
                    f"{_r(value - criteria.max_hd95)} mm"))
    return failures


def heldout_figures(client: "MlflowClient", settings: Settings, run_id: str
                    ) -> dict[str, float]:
    """The run's held-out figures (every ``heldout_*`` metric).

    Raises :class:`GateRefused` when one of the figures the gate uses was logged again with
    another value: a figure amended after the evaluation is not one to approve on.
    """
    from mlflow.exceptions import MlflowException

    metrics = registry.run_metrics(client, settings, run_id)
    figures = {k: float(v) for k, v in metrics.items() if k.startswith("heldout_")}
    for key in [*DICE.values(), *HD95.values()]:
        if key not in figures:
            continue
        try:
            history = {m.value for m in client.get_metric_history(run_id, key)}
        except MlflowException as exc:
            raise registry.mlflow_error(exc, f"the history of {key} in run {run_id}",
                                        settings) from None
        if len(history) > 1:
            raise GateRefused(
                "figure_changed",
                f"{key} of run {run_id} was logged {len(history)} times with different "
                f"values ({', '.join(_r(v) for v in sorted(history))}): evaluate the model "
                "once, in a new run, and register that run")
    return figures


@contextlib.contextmanager
def serialized(settings: Settings, session: Session) -> Iterator[None]:
    """One gate decision at a time across processes (API workers, CLI) and, on PostgreSQL,
    across hosts that share the platform database.

    A file lock in the data dir; on PostgreSQL also a session-level advisory lock on a
    connection of its own (held across the decision's commits, released at the end). The
    session's transaction is ended once the locks are held, so that what the decision reads
    (the newest approval) is what the previous decision committed.
    """
    settings.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    engine = session.get_bind()
    with exclusive_file_lock(settings.run_dir / "model-gate.lock"), contextlib.ExitStack() as held:
        if engine.dialect.name == "postgresql":
            conn = held.enter_context(engine.connect())
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _PG_GATE_LOCK})
            held.callback(conn.execute, text("SELECT pg_advisory_unlock(:key)"),
                          {"key": _PG_GATE_LOCK})
        session.commit()
        yield


def _check_request(actor: Actor, reason: str) -> str:
    if actor.role not in PROMOTERS:
        raise GateRefused("role", f"{actor.username!r} is {actor.role}; promoting and rolling "
                          "back models needs the role model_owner or admin", status=403)
    reason = (reason or "").strip()
    if not reason:
        raise GateRefused("no_reason", "give a reason (--reason TEXT): it is kept with the "
                          "approval", status=422)
    return reason


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Aliases:
    """The aliases a decision moves, remembered so a failed decision can put them back."""

    client: "MlflowClient"
    name: str
    before: dict[str, str]
    moved: list[str] = field(default_factory=list)

    def set(self, alias: str, version: str | None) -> None:
        self.moved.append(alias)
        if version is None:
            if alias in self.before:
                self.client.delete_registered_model_alias(self.name, alias)
        else:
            self.client.set_registered_model_alias(self.name, alias, version)

    def restore(self) -> None:
        for alias in self.moved:
            try:
                if alias in self.before:
                    self.client.set_registered_model_alias(self.name, alias, self.before[alias])
                else:
                    self.client.delete_registered_model_alias(self.name, alias)
            except Exception:  # best effort: the database still names the approved champion
                log.exception("could not restore alias %s of %s", alias, self.name)


def _move_aliases(settings: Settings, moves: _Aliases, approval: ModelApproval) -> None:
    """``previous`` then ``champion``; put back and :class:`RegistryUnavailable` on failure."""
    from mlflow.exceptions import MlflowException

    try:
        moves.set(PREVIOUS, approval.previous_version)
        moves.set(CHAMPION, approval.version)
    except MlflowException as exc:
        moves.restore()
        raise registry.mlflow_error(exc, f"moving the aliases of {approval.model_name!r}",
                                    settings) from None


def _tag(client: "MlflowClient", approval: ModelApproval) -> None:
    """The approval's tags on the version: for people browsing MLflow, so best effort (the
    platform trusts only the approval row)."""
    at = approval.approved_at.isoformat()
    try:
        for key, value in ((TAG_APPROVED_BY, approval.approved_by), (TAG_APPROVED_AT, at),
                           (TAG_APPROVAL_ID, str(approval.id))):
            client.set_model_version_tag(approval.model_name, approval.version, key, value)
    except Exception:
        log.exception("approval %s is in force but its tags on %s version %s are not set",
                      approval.id, approval.model_name, approval.version)


def _decide(settings: Settings, session: Session, audit: AuditHook, action: str,
            decide: Callable[[], tuple[ModelApproval, _Aliases]]) -> ModelApproval:
    """Run ``decide`` under the lock, move the aliases, then commit the approval with its
    audit row; every refusal is audited and committed too.

    The aliases move before the commit so that no database write lock is held while MLflow
    answers (the guard writes its audit rows to the same database); if the commit fails,
    they are put back. Between the two, for a few milliseconds, :func:`served_version`
    refuses the new alias: a job starting then fails and can be retried.
    """
    with serialized(settings, session):
        try:
            approval, moves = decide()
            _move_aliases(settings, moves, approval)
        except (GateRefused, ModelNotFound, RegistryUnavailable) as exc:
            status, code = ((exc.status, exc.code) if isinstance(exc, GateRefused) else
                            (404, "not_found") if isinstance(exc, ModelNotFound) else
                            (503, "mlflow"))
            session.rollback()
            audit("deny", status, f"model_{action}_refused", f"{code}: {exc}")
            session.commit()
            raise
        try:
            session.add(approval)
            session.flush()  # the approval's id, for the audit row and the tags
            verb = "promoted" if action == "promotion" else "rolled_back"
            audit("allow", 200, f"model_{verb}",
                  f"{approval.model_name} version {approval.version} (run {approval.run_id}) "
                  f"is {CHAMPION}, approval {approval.id}; replaced "
                  f"{approval.replaced_version or 'none'}; {PREVIOUS} "
                  f"{approval.previous_version or 'none'}; reason: {approval.reason}")
            session.commit()
        except BaseException:
            session.rollback()
            moves.restore()
            raise
        _tag(moves.client, approval)
        return approval


def promote(settings: Settings, session: Session, name: str, version: str, actor: Actor,
            reason: str, audit: AuditHook) -> ModelApproval:
    """Make ``version`` of ``name`` the champion if its held-out figures pass the gate.

    Returns the committed approval. Raises :class:`GateRefused` (with ``failures`` naming
    each figure that failed and by how much), :class:`ModelNotFound` or
    :class:`RegistryUnavailable`; each refusal is audited before it is raised.
    """
    version = str(version).strip()

    def decide() -> tuple[ModelApproval, _Aliases]:
        clean_reason = _check_request(actor, reason)
        if not version.isdigit():
            raise GateRefused("bad_version", f"{version!r} is not a version number: MLflow "
                              f"numbers versions 1, 2, ... (see `neuronova models list {name}`)",
                              status=422)
        client = registry.mlflow_client(settings)
        mv = registry.model_version(client, settings, name, version)
        if mv.status != "READY":
            raise GateRefused("not_ready", f"version {version} of {name!r} is {mv.status}, "
                              "not READY: wait for its registration to finish")
        if not mv.run_id:
            raise GateRefused("no_run", f"version {version} of {name!r} has no training run, "
                              "so no held-out figures: register it with `neuronova models "
                              "register RUN`")
        before = registry.aliases(client, settings, name)
        current = registry.latest_approval(session, name)
        # The approved champion itself (same number, same run), e.g. after its alias moved.
        same = current is not None and current.version == version and \
            current.run_id == mv.run_id
        if same and before.get(CHAMPION) == version:
            raise GateRefused("already_champion",
                              f"version {version} of {name!r} is already the approved "
                              f"{CHAMPION} (approval {current.id})")
        figures = heldout_figures(client, settings, mv.run_id)
        criteria = Criteria.from_settings(settings)
        champion = json.loads(current.figures) if current and not same else None
        failures = check(figures, criteria, champion, current.version if current else None)
        if failures:
            code = "figures_missing" if any(f.against == "missing" for f in failures) else \
                "below_threshold" if any(f.against == "threshold" for f in failures) else \
                "worse_than_champion"
            raise GateRefused(code, f"version {version} of {name!r} is not promoted: "
                              + "; ".join(f.message for f in failures), failures)
        digest = registry.artifact_digest(settings, mv.source)
        if current is None:
            replaced = previous = previous_run = None
        elif same:  # re-asserting the approved champion: keep its previous
            replaced = current.version
            previous, previous_run = current.previous_version, current.previous_run_id
        else:
            replaced = previous = current.version
            previous_run = current.run_id
        approval = ModelApproval(
            model_name=name, version=version, run_id=mv.run_id, kind="promote",
            source=mv.source, model_id=registry.logged_model_id(mv), artifact_sha256=digest,
            approved_by=actor.username, role=actor.role, approved_at=_now(),
            reason=clean_reason, figures=json.dumps(figures, sort_keys=True),
            criteria=json.dumps({**asdict(criteria), "champion": champion,
                                 "champion_version": replaced}, sort_keys=True),
            replaced_version=replaced, previous_version=previous, previous_run_id=previous_run)
        return approval, _Aliases(client, name, before)

    return _decide(settings, session, audit, "promotion", decide)


def rollback(settings: Settings, session: Session, name: str, actor: Actor, reason: str,
             audit: AuditHook) -> ModelApproval:
    """Make the previous champion of ``name`` the champion again (an approval of kind
    ``rollback``); its own previous champion becomes ``previous``.

    The version restored is the one the database recorded as previous, never MLflow's
    ``previous`` alias (which anybody with write access could have moved), and its files
    must still be the ones approved.
    """

    def decide() -> tuple[ModelApproval, _Aliases]:
        clean_reason = _check_request(actor, reason)
        current = registry.latest_approval(session, name)
        if current is None:
            raise GateRefused("no_champion", f"{name!r} has no approved champion to roll back "
                              "from", status=404)
        if not current.previous_version:
            raise GateRefused("no_previous", f"{name!r} has no previous champion to restore: "
                              f"version {current.version} is the first approved one")
        target = current.previous_version
        client = registry.mlflow_client(settings)
        mv = registry.model_version(client, settings, name, target)
        if mv.run_id != current.previous_run_id:
            raise GateRefused("previous_replaced",
                              f"version {target} of {name!r} now holds run {mv.run_id}, not "
                              f"the approved run {current.previous_run_id}: promote a version "
                              "through the gate instead")
        earlier = next((a for a in registry.approvals(session, name)
                        if a.version == target and a.run_id == mv.run_id), None)
        if earlier is None:  # cannot happen: previous versions come from approvals
            raise GateRefused("previous_unapproved",
                              f"version {target} of {name!r} has no approval on record")
        digest = registry.artifact_digest(settings, mv.source)
        if earlier.artifact_sha256 and digest != earlier.artifact_sha256:
            raise GateRefused("files_changed",
                              f"the files of version {target} of {name!r} changed after their "
                              f"approval {earlier.id}: register the model again and promote it")
        before = registry.aliases(client, settings, name)
        approval = ModelApproval(
            model_name=name, version=target, run_id=mv.run_id, kind="rollback",
            source=mv.source, model_id=registry.logged_model_id(mv), artifact_sha256=digest,
            approved_by=actor.username, role=actor.role, approved_at=_now(),
            reason=clean_reason, figures=earlier.figures,
            criteria=json.dumps({"rolled_back_from": current.version,
                                 "restored_approval": earlier.id}, sort_keys=True),
            replaced_version=current.version, previous_version=earlier.previous_version,
            previous_run_id=earlier.previous_run_id)
        return approval, _Aliases(client, name, before)

    return _decide(settings, session, audit, "rollback", decide)


def failures_json(exc: GateRefused) -> list[dict[str, Any]]:
    """The failed figures of a refusal, for JSON answers."""
    return [asdict(f) for f in exc.failures]
