"""The model registry as the platform sees it: MLflow's registered models and the one
version of each that the platform may serve.

MLflow keeps the versions and their aliases, but anybody who may register a version may
also move an alias (MLflow cannot restrict aliases on their own). So the platform does not
take ``champion`` on MLflow's word: :func:`served_version` serves the version the alias
names only while the platform database's newest approval for that model
(:class:`~neuronova_lib.db.models.ModelApproval`, written by the promotion gate,
:mod:`neuronova_lib.ai.gate`) names that same version and run. An alias moved any other
way is refused with a message that says how to fix it.

Every MLflow call of the platform's own code goes to :func:`tracking_uri`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..config import Settings
from ..db.engine import session_factory
from ..db.models import ModelApproval

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

log = logging.getLogger(__name__)

#: The alias inference serves (when the gate's approval agrees) and the one rollback restores.
CHAMPION = "champion"
PREVIOUS = "previous"
#: Tags the gate sets on a model version it approves (the database holds the record).
TAG_APPROVED_BY = "neuronova.approved_by"
TAG_APPROVED_AT = "neuronova.approved_at"
TAG_APPROVAL_ID = "neuronova.approval_id"
#: Where ``mlflow.pytorch.log_model(..., name="model")`` puts the model in a run.
MODEL_ARTIFACT = "model"
#: Written by MLflow into a logged model's folder when a version is registered: it names
#: the registered model and differs from version to version, so it is not part of the digest.
_UNHASHED = frozenset({"registered_model_meta"})
#: MLflow client settings the platform's processes use unless already set: few retries,
#: and no progress bar in the API's log or the command's output when the gate hashes a model.
_CLIENT_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
                    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


class RegistryError(Exception):
    """A registry problem with a message that says what to do."""


class ModelNotFound(RegistryError):
    """No such registered model, version or run."""


class ModelNotApproved(RegistryError):
    """The ``champion`` alias names a version the promotion gate did not approve."""


class RegistryUnavailable(RegistryError):
    """MLflow cannot be reached or answered with an error."""


@dataclass(frozen=True)
class ServedModel:
    """The champion the platform serves: a version the gate approved, pinned by number.

    ``model_uri`` names the version itself (``models:/NAME/VERSION``), not the alias, so
    that an alias moved after this answer cannot change what is loaded.
    """

    version: str
    run_id: str
    model_uri: str
    approval_id: int
    name: str = ""
    #: sha256 of the model's files as approved (:func:`artifact_digest`); ``None`` if unknown.
    artifact_sha256: str | None = None


def tracking_uri(settings: Settings) -> str:
    """The MLflow the platform's own code talks to: the override or the loopback server."""
    if settings.mlflow_tracking_uri:
        return settings.mlflow_tracking_uri.rstrip("/")
    return f"http://127.0.0.1:{settings.mlflow_port}/mlflow"


def mlflow_client(settings: Settings) -> "MlflowClient":
    """A client bound to :func:`tracking_uri` for runs and the registry alike.

    An explicit client, not ``mlflow.set_tracking_uri``: the process-wide URI belongs to
    whoever else runs in this process (a notebook, a training run).

    MLflow retries a refused connection 7 times with exponential backoff (about 4 minutes
    here) before it gives up; a person or a job is waiting on the platform's calls, so
    unless the environment says otherwise, this process gives up after 2 retries (seconds).
    """
    for variable, value in _CLIENT_DEFAULTS.items():
        os.environ.setdefault(variable, value)
    try:
        from mlflow import MlflowClient
    except ImportError:
        raise RegistryError("mlflow is not installed: install the `ai` extra "
                            "(pip install -e '.[ai]')") from None
    uri = tracking_uri(settings)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _code(exc: BaseException) -> str | None:
    return getattr(exc, "error_code", None)


def mlflow_error(exc: BaseException, what: str, settings: Settings) -> RegistryError:
    """The registry error for an MLflow exception: not found, or MLflow unreachable."""
    if _code(exc) == "RESOURCE_DOES_NOT_EXIST":
        return ModelNotFound(f"{what} does not exist in MLflow at {tracking_uri(settings)} "
                             "(see `neuronova models list`)")
    return RegistryUnavailable(f"MLflow at {tracking_uri(settings)} failed on {what}: "
                               f"{str(exc)[:300]} (is it running? `neuronova status`)")


def model_version(client: "MlflowClient", settings: Settings, name: str,
                  version: str) -> "ModelVersion":
    """Version ``version`` of ``name``, or :class:`ModelNotFound`."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(name, str(version))
    except MlflowException as exc:
        raise mlflow_error(exc, f"version {version} of model {name!r}", settings) from None


def aliases(client: "MlflowClient", settings: Settings, name: str) -> dict[str, str]:
    """Alias -> version of registered model ``name``, or :class:`ModelNotFound`."""
    from mlflow.exceptions import MlflowException

    try:
        return {a: str(v) for a, v in client.get_registered_model(name).aliases.items()}
    except MlflowException as exc:
        raise mlflow_error(exc, f"registered model {name!r}", settings) from None


def logged_model_id(mv: "ModelVersion") -> str | None:
    """The logged model (``m-...``) behind a version: MLflow's REST answers leave
    ``model_id`` empty, but a version registered from a run has source ``models:/m-...``."""
    model_id = getattr(mv, "model_id", None)
    if not model_id and (mv.source or "").startswith("models:/m-"):
        model_id = mv.source[len("models:/"):].split("/", 1)[0]
    return model_id or None


def latest_approval(session: Session, name: str) -> ModelApproval | None:
    """The newest approval (promotion or rollback) of model ``name``: its champion."""
    return session.scalars(select(ModelApproval).where(ModelApproval.model_name == name)
                           .order_by(ModelApproval.id.desc()).limit(1)).first()


def approvals(session: Session, name: str) -> list[ModelApproval]:
    """Every approval of model ``name``, newest first."""
    return list(session.scalars(select(ModelApproval).where(ModelApproval.model_name == name)
                                .order_by(ModelApproval.id.desc())))


def register(settings: Settings, run_id: str, name: str | None = None) -> "ModelVersion":
    """Register the model a training run logged (``runs:/RUN/model``) as a new version.

    The version gets no alias: only the promotion gate makes it ``champion``.

    Raises
    ------
    ModelNotFound
        No such run, or the run logged no model called ``model``.
    RegistryUnavailable
        MLflow failed.
    """
    from mlflow.exceptions import MlflowException

    name = name or settings.model_name
    client = mlflow_client(settings)
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise mlflow_error(exc, f"run {run_id!r}", settings) from None
    try:
        logged = [m for m in client.search_logged_models(
                      experiment_ids=[run.info.experiment_id],
                      filter_string=f"name = '{MODEL_ARTIFACT}'")
                  if m.source_run_id == run_id]
        if not logged:
            raise ModelNotFound(
                f"run {run_id} logged no model named {MODEL_ARTIFACT!r}: log one with "
                f"mlflow.pytorch.log_model(net, name={MODEL_ARTIFACT!r}, ...) or train "
                "with `neuronova train`")
        steps = {o.model_id: o.step for o in (run.outputs.model_outputs if run.outputs else [])}
        model = max(logged, key=lambda m: steps.get(m.model_id, -1))
        try:
            client.create_registered_model(name)
        except MlflowException as exc:
            if _code(exc) not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                raise
        return client.create_model_version(
            name, source=f"models:/{model.model_id}", run_id=run_id, model_id=model.model_id)
    except MlflowException as exc:
        raise mlflow_error(exc, f"registering run {run_id} as {name!r}", settings) from None


def artifact_digest(settings: Settings, source: str) -> str:
    """sha256 over a model's files (each file's path and content), as MLflow serves them.

    Recorded with an approval, so that a model whose files were overwritten in the artifact
    store after its approval can be told apart (:func:`download_served`).
    """
    import mlflow.artifacts

    with tempfile.TemporaryDirectory(prefix="neuronova-model-") as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=source, dst_path=tmp, tracking_uri=tracking_uri(settings))
        except Exception as exc:  # MLflow raises many kinds here (REST, OSError, ...)
            raise mlflow_error(exc, f"the model files of {source}", settings) from None
        return folder_digest(Path(local))


def folder_digest(folder: Path) -> str:
    """sha256 over every file below ``folder``: relative path, NUL, content digest, NUL."""
    total = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder).as_posix()
        if relative in _UNHASHED:
            continue
        total.update(relative.encode() + b"\0")
        total.update(hashlib.sha256(path.read_bytes()).hexdigest().encode() + b"\0")
    return total.hexdigest()


def _fix_hint(name: str, version: str | None, approved: ModelApproval | None) -> str:
    hints = []
    if version is not None:
        hints.append(f"promote version {version} through the gate "
                     f"(`neuronova models promote {name} {version} --reason TEXT --as USER`)")
    if approved is not None and approved.version != version:
        hints.append(f"restore the approved champion, version {approved.version} "
                     f"(`neuronova models promote {name} {approved.version} --reason TEXT "
                     "--as USER`)")
    return "; or ".join(hints)


def served_version(settings: Settings, name: str | None = None,
                   session: Session | None = None) -> ServedModel:
    """The champion of ``name`` that the platform may serve: one the gate approved.

    Resolves the ``champion`` alias through MLflow, then asks the platform database: the
    newest approval for ``name`` must name that very version and run. An alias moved in the
    MLflow UI or through its REST API is therefore never served.

    Raises
    ------
    ModelNotFound
        Nothing is registered under ``name``.
    ModelNotApproved
        No champion, or the champion is not the version the gate approved last.
    RegistryUnavailable
        MLflow cannot be reached.
    """
    from mlflow.exceptions import MlflowException

    name = name or settings.model_name
    client = mlflow_client(settings)
    current = aliases(client, settings, name)
    if session is None:
        with session_factory(settings.sqlalchemy_url)() as own:
            approved = latest_approval(own, name)
    else:
        approved = latest_approval(session, name)
    if CHAMPION not in current:
        raise ModelNotApproved(
            f"model {name!r} has no {CHAMPION!r}: "
            + (_fix_hint(name, None, approved) if approved else
               f"promote a version through the gate (`neuronova models promote {name} "
               "VERSION --reason TEXT --as USER`; versions: `neuronova models list "
               f"{name}`)"))
    version = current[CHAMPION]
    if approved is None:
        raise ModelNotApproved(
            f"version {version} of {name!r} is {CHAMPION!r} in MLflow but the promotion gate "
            f"never approved a version of {name!r}, so it is not served: "
            + _fix_hint(name, version, None))
    try:
        mv = client.get_model_version(name, version)
    except MlflowException as exc:
        raise mlflow_error(exc, f"version {version} of model {name!r}", settings) from None
    if approved.version != version or approved.run_id != mv.run_id or (
            approved.source and mv.source != approved.source):
        what = ("the version the gate approved last is "
                f"{approved.version} (run {approved.run_id})")
        if approved.version == version:
            what = (f"version {version} now holds run {mv.run_id}, not the approved run "
                    f"{approved.run_id} (re-registered?)")
        raise ModelNotApproved(
            f"version {version} of {name!r} is {CHAMPION!r} in MLflow without the promotion "
            f"gate's approval ({what}), so it is not served: "
            + _fix_hint(name, version, approved))
    return ServedModel(version=version, run_id=approved.run_id,
                       model_uri=f"models:/{name}/{version}", approval_id=approved.id,
                       name=name, artifact_sha256=approved.artifact_sha256)


def download_served(settings: Settings, served: ServedModel, dst: Path) -> Path:
    """Download the served version's files into ``dst`` and check them against the approval.

    Returns the local model folder (loadable with ``mlflow.pytorch.load_model``). Raises
    :class:`ModelNotApproved` when the files differ from the ones the gate approved.
    """
    import mlflow.artifacts

    try:
        local = Path(mlflow.artifacts.download_artifacts(
            artifact_uri=served.model_uri, dst_path=str(dst),
            tracking_uri=tracking_uri(settings)))
    except Exception as exc:
        raise mlflow_error(exc, f"the model files of {served.model_uri}", settings) from None
    if served.artifact_sha256 and folder_digest(local) != served.artifact_sha256:
        raise ModelNotApproved(
            f"the files of {served.model_uri} changed after the gate approved them "
            f"(approval {served.approval_id}): they are not served; register the model again "
            "from its training run and promote the new version")
    return local


def run_metrics(client: "MlflowClient", settings: Settings, run_id: str) -> dict[str, float]:
    """The latest value of every metric of run ``run_id``."""
    from mlflow.exceptions import MlflowException

    try:
        return dict(client.get_run(run_id).data.metrics)
    except MlflowException as exc:
        raise mlflow_error(exc, f"run {run_id!r}", settings) from None


def describe(settings: Settings, name: str, session: Session) -> dict[str, Any]:
    """One registered model for people: versions, aliases, figures, approvals, what is served.

    ``served`` holds the :class:`ServedModel` fields, or ``served_error`` says why nothing is.
    """
    from mlflow.exceptions import MlflowException

    client = mlflow_client(settings)
    by_alias = aliases(client, settings, name)
    by_version: dict[str, list[str]] = {}
    for alias, version in sorted(by_alias.items()):
        by_version.setdefault(version, []).append(alias)
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException as exc:
        raise mlflow_error(exc, f"the versions of {name!r}", settings) from None
    records = approvals(session, name)
    out_versions = []
    for mv in sorted(versions, key=lambda v: int(v.version), reverse=True):
        try:
            metrics = run_metrics(client, settings, mv.run_id) if mv.run_id else {}
        except ModelNotFound:  # the run was deleted: the version stays listed
            metrics = {}
        out_versions.append({
            "version": str(mv.version), "run_id": mv.run_id, "status": mv.status,
            "source": mv.source, "aliases": by_version.get(str(mv.version), []),
            "created_at": mv.creation_timestamp,
            "figures": {k: v for k, v in sorted(metrics.items()) if k.startswith("heldout_")},
            "tags": {k: v for k, v in (mv.tags or {}).items() if k.startswith("neuronova.")},
            "approvals": [a.id for a in records if a.version == str(mv.version)],
        })
    result: dict[str, Any] = {"name": name, "aliases": by_alias, "versions": out_versions,
                              "approvals": [approval_dict(a) for a in records],
                              "served": None, "served_error": None}
    try:
        served = served_version(settings, name, session=session)
        result["served"] = {"version": served.version, "run_id": served.run_id,
                            "model_uri": served.model_uri, "approval_id": served.approval_id}
    except RegistryError as exc:
        result["served_error"] = str(exc)
    return result


def model_names(settings: Settings) -> list[str]:
    """Names of every registered model, sorted."""
    from mlflow.exceptions import MlflowException

    client = mlflow_client(settings)
    try:
        return sorted(m.name for m in client.search_registered_models(max_results=1000))
    except MlflowException as exc:
        raise mlflow_error(exc, "the registered models", settings) from None


def approval_dict(approval: ModelApproval) -> dict[str, Any]:
    """An approval record as JSON-ready data."""
    import json
    from datetime import UTC

    at = approval.approved_at
    if at is not None and at.tzinfo is None:  # SQLite gives naive datetimes; all are UTC
        at = at.replace(tzinfo=UTC)
    return {
        "id": approval.id, "model_name": approval.model_name, "version": approval.version,
        "run_id": approval.run_id, "kind": approval.kind, "source": approval.source,
        "model_id": approval.model_id, "artifact_sha256": approval.artifact_sha256,
        "approved_by": approval.approved_by, "role": approval.role,
        "approved_at": at.isoformat() if at else None, "reason": approval.reason,
        "figures": json.loads(approval.figures),
        "criteria": json.loads(approval.criteria) if approval.criteria else None,
        "replaced_version": approval.replaced_version,
        "previous_version": approval.previous_version,
        "previous_run_id": approval.previous_run_id,
    }
