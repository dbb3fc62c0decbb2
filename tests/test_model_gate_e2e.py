"""The promotion gate against a real MLflow server: real runs with a small MONAI UNet logged
with held-out figures, registered, promoted, refused, rolled back; an alias moved through
MLflow directly is never served; the API's role checks and the CLI.

Each test registers its own model name on the shared server, so tests do not see each
other's versions; the runs (and their logged models) are made once per module.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from neuronova_lib.ai import gate, registry
from neuronova_lib.ai.gate import Actor, GateRefused
from neuronova_lib.ai.registry import ModelNotApproved, ModelNotFound, served_version
from neuronova_lib.cli import main
from neuronova_lib.config import Settings, get_settings
from neuronova_lib.db.engine import get_engine, session_factory
from neuronova_lib.db.migrate import upgrade_database
from neuronova_lib.db.models import AuditRecord, ModelApproval
from neuronova_lib.db.users import ensure_demo_users
from services.api.app import create_app

pytestmark = pytest.mark.e2e

DEMO_PASSWORD = "demo-password-for-gate-tests"
OWNER = Actor("owner", "model_owner")

#: Held-out figures of the runs: A meets the thresholds, B is better, LOW misses the TC
#: threshold (0.85) by 0.05, WORSE meets the thresholds but is 0.03 below B in every Dice.
FIGURES = {
    "A": {"tc": 0.90, "wt": 0.91, "et": 0.80, "hd95": 6.0},
    "B": {"tc": 0.93, "wt": 0.94, "et": 0.85, "hd95": 4.0},
    "LOW": {"tc": 0.80, "wt": 0.92, "et": 0.80, "hd95": 7.0},
    "WORSE": {"tc": 0.90, "wt": 0.91, "et": 0.82, "hd95": 5.0},
}


def _log_run(uri: str, figures: dict[str, float]) -> str:
    """A real run: a tiny MONAI UNet logged as MLflow logs the platform's models."""
    import mlflow
    import torch
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    net = UNet(spatial_dims=3, in_channels=4, out_channels=3, channels=(4, 8), strides=(2,),
               num_res_units=0)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("gate-tests")
    with mlflow.start_run() as run:
        for region in ("tc", "wt", "et"):
            mlflow.log_metric(f"heldout_dice_{region}", figures[region])
            mlflow.log_metric(f"heldout_hd95_{region}", figures["hd95"])
        mlflow.log_metric("heldout_cases", 4)
        mlflow.pytorch.log_model(net, name="model", serialization_format="pickle")
    return run.info.run_id


@pytest.fixture(scope="module")
def runs(mlflow_server: str) -> dict[str, str]:
    return {key: _log_run(mlflow_server, figures) for key, figures in FIGURES.items()}


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
             mlflow_server: str) -> Iterator[Settings]:
    for name in list(os.environ):
        if name.startswith("NEURONOVA_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("NEURONOVA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NEURONOVA_DEMO_PASSWORD", DEMO_PASSWORD)
    monkeypatch.setenv("NEURONOVA_MLFLOW_TRACKING_URI", mlflow_server)
    get_settings.cache_clear()
    current = get_settings()
    upgrade_database(current.sqlalchemy_url)
    ensure_demo_users(current)
    yield current
    get_engine(current.sqlalchemy_url).dispose()


@pytest.fixture
def name() -> str:
    return f"gate-test-{uuid.uuid4().hex[:8]}"


def _register(settings: Settings, runs: dict[str, str], name: str, *keys: str) -> list[str]:
    return [str(registry.register(settings, runs[k], name).version) for k in keys]


def _audit_hook(session: Session, username: str) -> gate.AuditHook:
    def audit(decision: str, status: int, reason: str, detail: str) -> None:
        session.add(AuditRecord(service="test", username=username, method="TEST",
                                path="gate", decision=decision, status=status, reason=reason,
                                detail=detail))
    return audit


def _promote(settings: Settings, name: str, version: str, actor: Actor = OWNER,
             reason: str = "held-out figures reviewed") -> ModelApproval:
    with session_factory(settings.sqlalchemy_url)() as session:
        return gate.promote(settings, session, name, version, actor, reason,
                            _audit_hook(session, actor.username))


def _rollback(settings: Settings, name: str, reason: str = "regression seen") -> ModelApproval:
    with session_factory(settings.sqlalchemy_url)() as session:
        return gate.rollback(settings, session, name, OWNER, reason,
                             _audit_hook(session, OWNER.username))


def _audits(settings: Settings) -> list[AuditRecord]:
    with session_factory(settings.sqlalchemy_url)() as session:
        return list(session.scalars(select(AuditRecord).where(AuditRecord.service == "test")
                                    .order_by(AuditRecord.id)))


def _approvals(settings: Settings, name: str) -> list[ModelApproval]:
    with session_factory(settings.sqlalchemy_url)() as session:
        return list(reversed(registry.approvals(session, name)))


def _aliases(settings: Settings, name: str) -> dict[str, str]:
    return registry.aliases(registry.mlflow_client(settings), settings, name)


def test_gate_refuses_a_version_below_threshold(settings: Settings, runs: dict[str, str],
                                                 name: str) -> None:
    (low,) = _register(settings, runs, name, "LOW")
    with pytest.raises(GateRefused) as refused:
        _promote(settings, name, low)
    assert refused.value.code == "below_threshold"
    (failure,) = refused.value.failures
    assert (failure.figure, failure.against) == ("heldout_dice_tc", "threshold")
    assert failure.by == pytest.approx(0.05)
    assert "heldout_dice_tc 0.8 is below the threshold 0.85 by 0.05" in str(refused.value)
    assert _approvals(settings, name) == []
    assert "champion" not in _aliases(settings, name)
    (row,) = _audits(settings)
    assert (row.decision, row.status, row.reason) == ("deny", 409, "model_promotion_refused")
    assert "below_threshold" in (row.detail or "")
    with pytest.raises(ModelNotApproved, match="neuronova models promote"):
        served_version(settings, name)


def test_promote_refuse_worse_accept_better_and_roll_back(
        settings: Settings, runs: dict[str, str], name: str) -> None:
    a, b, worse = _register(settings, runs, name, "A", "B", "WORSE")
    first = _promote(settings, name, a)
    assert (first.kind, first.version, first.run_id) == ("promote", a, runs["A"])
    assert first.replaced_version is None and first.previous_version is None
    assert first.artifact_sha256 and len(first.artifact_sha256) == 64
    assert first.model_id and first.source == f"models:/{first.model_id}"
    assert _aliases(settings, name) == {"champion": a}

    second = _promote(settings, name, b, reason="better on every region")
    assert (second.replaced_version, second.previous_version) == (a, a)
    assert _aliases(settings, name) == {"champion": b, "previous": a}
    tags = registry.mlflow_client(settings).get_model_version(name, b).tags
    assert tags["neuronova.approved_by"] == "owner"
    assert tags["neuronova.approval_id"] == str(second.id)
    assert tags["neuronova.approved_at"].startswith(second.approved_at.isoformat()[:19])
    served = served_version(settings, name)
    assert (served.version, served.run_id, served.approval_id) == (b, runs["B"], second.id)
    assert served.model_uri == f"models:/{name}/{b}"

    with pytest.raises(GateRefused) as refused:
        _promote(settings, name, worse)
    assert refused.value.code == "worse_than_champion"
    assert {f.figure for f in refused.value.failures} == {
        "heldout_dice_tc", "heldout_dice_wt", "heldout_dice_et"}
    assert all(f.by == pytest.approx(0.01) for f in refused.value.failures)
    assert f"champion's (version {b})" in str(refused.value)
    assert served_version(settings, name).version == b

    back = _rollback(settings, name)
    assert (back.kind, back.version, back.replaced_version, back.previous_version) == (
        "rollback", a, b, None)
    assert back.reason == "regression seen"
    assert _aliases(settings, name) == {"champion": a}
    assert served_version(settings, name).version == a
    with pytest.raises(GateRefused, match="no previous champion"):
        _rollback(settings, name)

    decisions = [(r.decision, r.reason) for r in _audits(settings)]
    assert decisions == [("allow", "model_promoted"), ("allow", "model_promoted"),
                         ("deny", "model_promotion_refused"), ("allow", "model_rolled_back"),
                         ("deny", "model_rollback_refused")]
    assert [x.kind for x in _approvals(settings, name)] == ["promote", "promote", "rollback"]


def test_an_alias_moved_in_mlflow_directly_is_never_served(
        settings: Settings, runs: dict[str, str], name: str) -> None:
    from mlflow import MlflowClient

    with pytest.raises(ModelNotFound):
        served_version(settings, name)
    a, b = _register(settings, runs, name, "A", "B")
    direct = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
    direct.set_registered_model_alias(name, "champion", b)  # no gate: never approved
    with pytest.raises(ModelNotApproved, match=f"version {b} .*never approved"):
        served_version(settings, name)

    _promote(settings, name, a)
    assert served_version(settings, name).version == a
    direct.set_registered_model_alias(name, "champion", b)  # around the gate again
    with pytest.raises(ModelNotApproved) as refused:
        served_version(settings, name)
    message = str(refused.value)
    assert f"version {b} of {name!r} is 'champion' in MLflow without the promotion gate" in message
    assert f"neuronova models promote {name} {b}" in message
    assert f"neuronova models promote {name} {a}" in message  # or restore the approved one

    # Restoring the approved champion through the gate puts the alias back.
    restored = _promote(settings, name, a, reason="alias moved outside the gate")
    assert restored.replaced_version == a and restored.previous_version is None
    assert served_version(settings, name).version == a
    direct.delete_registered_model_alias(name, "champion")
    with pytest.raises(ModelNotApproved, match=f"restore the approved champion, version {a}"):
        served_version(settings, name)

    # Deleted and registered again, the model numbers its versions from 1 again: version 1
    # now holds another run, and the approval's run id tells them apart.
    direct.delete_registered_model(name)
    (again,) = _register(settings, runs, name, "B")
    assert again == a == "1"
    direct.set_registered_model_alias(name, "champion", again)
    with pytest.raises(ModelNotApproved, match=f"now holds run {runs['B']}, not the approved"):
        served_version(settings, name)
    # Through the gate it is a new candidate, judged against the approved champion's figures.
    approval = _promote(settings, name, again, reason="re-registered")
    assert (approval.run_id, approval.replaced_version, approval.previous_run_id) == (
        runs["B"], a, runs["A"])
    assert served_version(settings, name).run_id == runs["B"]
    with pytest.raises(GateRefused) as refused:  # the approved previous run is gone
        _rollback(settings, name)
    assert refused.value.code == "previous_replaced"


def _promote_at_once(deciders: list[tuple[Settings, str]], name: str) -> list[ModelApproval]:
    """Promote each (settings, version) in a thread of its own, all released together."""
    start = threading.Barrier(len(deciders))
    results: dict[str, object] = {}

    def promote(settings: Settings, version: str) -> None:
        start.wait()
        try:
            results[version] = _promote(settings, name, version)
        except Exception as exc:  # reported below
            results[version] = exc

    threads = [threading.Thread(target=promote, args=d) for d in deciders]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert all(isinstance(r, ModelApproval) for r in results.values()), results
    return _approvals(deciders[0][0], name)


def test_concurrent_promotions_are_serialised(settings: Settings, runs: dict[str, str],
                                              name: str) -> None:
    # Three versions of one run: each passes against nothing and against the others.
    versions = _register(settings, runs, name, "A", "A", "A")
    chain = _promote_at_once([(settings, v) for v in versions], name)
    # Each decision saw the one before it: one chain, no two replacing the same champion.
    assert [x.replaced_version for x in chain] == [None, chain[0].version, chain[1].version]
    assert sorted(x.version for x in chain) == sorted(versions)
    assert _aliases(settings, name) == {"champion": chain[2].version,
                                        "previous": chain[1].version}


def test_concurrent_promotions_from_hosts_sharing_postgresql_are_serialised(
        settings: Settings, runs: dict[str, str], name: str, postgres_socket: Path,
        tmp_path: Path) -> None:
    import psycopg

    database = f"gate_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"host={postgres_socket} user=postgres dbname=postgres",
                         autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {database}")
    url = f"postgresql+psycopg://postgres@/{database}?host={postgres_socket}"
    upgrade_database(url)
    # Two data dirs (two hosts): their file locks are different files; only the database's
    # advisory lock is shared.
    hosts = [settings.model_copy(update={"home": tmp_path / f"host{i}", "database_url": url})
             for i in range(3)]
    versions = _register(settings, runs, name, "A", "A", "A")
    try:
        chain = _promote_at_once(list(zip(hosts, versions, strict=True)), name)
        assert [x.replaced_version for x in chain] == [None, chain[0].version,
                                                       chain[1].version]
    finally:
        get_engine(url).dispose()


def test_gate_refuses_users_without_the_role_and_empty_reasons(
        settings: Settings, runs: dict[str, str], name: str) -> None:
    (a,) = _register(settings, runs, name, "A")
    with pytest.raises(GateRefused) as refused:
        _promote(settings, name, a, actor=Actor("scientist", "scientist"))
    assert refused.value.status == 403
    with pytest.raises(GateRefused, match="give a reason"):
        _promote(settings, name, a, reason="  ")
    assert [r.status for r in _audits(settings)] == [403, 422]
    assert _approvals(settings, name) == []


def test_figures_amended_after_evaluation_are_refused(
        settings: Settings, mlflow_server: str, name: str) -> None:
    import mlflow

    run_id = _log_run(mlflow_server, FIGURES["LOW"])
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metric("heldout_dice_tc", 0.99)  # the latest value now passes
    (version,) = _register(settings, {"X": run_id}, name, "X")
    with pytest.raises(GateRefused) as refused:
        _promote(settings, name, version)
    assert refused.value.code == "figure_changed"
    assert "heldout_dice_tc" in str(refused.value) and "0.8, 0.99" in str(refused.value)
    assert _approvals(settings, name) == []


def test_model_files_overwritten_after_approval_are_refused(
        settings: Settings, mlflow_server: str, name: str, tmp_path: Path) -> None:
    import torch

    runs = {"A": _log_run(mlflow_server, FIGURES["A"]), "B": _log_run(mlflow_server, FIGURES["B"])}
    a, b = _register(settings, runs, name, "A", "B")
    _promote(settings, name, a)
    served = served_version(settings, name)
    local = registry.download_served(settings, served, tmp_path / "ok")
    assert (local / "MLmodel").is_file() and (local / "data" / "model.pth").is_file()

    # Anybody who may log to MLflow can overwrite a logged model's files in place.
    client = registry.mlflow_client(settings)
    model_id = registry.logged_model_id(client.get_model_version(name, a))
    assert model_id and model_id.startswith("m-")
    (tmp_path / "evil").mkdir()
    torch.save({"not": "the approved weights"}, tmp_path / "evil" / "model.pth")
    client.log_model_artifact(model_id, str(tmp_path / "evil" / "model.pth"), "data")
    with pytest.raises(ModelNotApproved, match="changed after the gate approved them"):
        registry.download_served(settings, served_version(settings, name), tmp_path / "bad")
    _promote(settings, name, b)
    with pytest.raises(GateRefused) as refused:
        _rollback(settings, name)
    assert refused.value.code == "files_changed"
    assert served_version(settings, name).version == b


def _token(client: TestClient, username: str) -> dict[str, str]:
    response = client.post("/api/auth/token",
                           data={"username": username, "password": DEMO_PASSWORD})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def test_api_roles_promotion_and_rollback(settings: Settings, runs: dict[str, str],
                                          name: str) -> None:
    a, b, low = _register(settings, runs, name, "A", "B", "LOW")
    promote_b = f"/api/models/{name}/versions/{b}/promote"
    with TestClient(create_app(settings)) as client:
        clinician, scientist, owner, admin = (_token(client, u) for u in
                                              ("clinician", "scientist", "owner", "admin"))
        assert client.get(f"/api/models/{name}", headers=clinician).status_code == 403
        for who in (clinician, scientist):
            refused = client.post(promote_b, json={"reason": "try"}, headers=who)
            assert refused.status_code == 403, refused.text
        assert client.post(f"/api/models/{name}/rollback", json={"reason": "x"},
                           headers=scientist).status_code == 403

        low_answer = client.post(f"/api/models/{name}/versions/{low}/promote",
                                 json={"reason": "try"}, headers=owner)
        assert low_answer.status_code == 409
        detail = low_answer.json()["detail"]
        assert detail["code"] == "below_threshold"
        assert detail["failures"][0]["figure"] == "heldout_dice_tc"
        assert detail["failures"][0]["by"] == pytest.approx(0.05)

        first = client.post(f"/api/models/{name}/versions/{a}/promote",
                            json={"reason": "first champion"}, headers=owner)
        assert first.status_code == 200, first.text
        second = client.post(promote_b, json={"reason": "better"}, headers=admin)
        assert second.status_code == 200, second.text
        assert second.json()["approved_by"] == "admin"
        assert second.json()["previous_version"] == a

        view = client.get(f"/api/models/{name}", headers=scientist)
        assert view.status_code == 200
        body = view.json()
        assert body["aliases"] == {"champion": b, "previous": a}
        assert body["served"]["version"] == b and body["served_error"] is None
        by_version = {v["version"]: v for v in body["versions"]}
        assert by_version[b]["figures"]["heldout_dice_tc"] == pytest.approx(0.93)
        assert by_version[b]["tags"]["neuronova.approved_by"] == "admin"
        assert [x["kind"] for x in body["approvals"]] == ["promote", "promote"]
        listed = client.get("/api/models", headers=scientist)
        assert listed.status_code == 200 and name in {m["name"] for m in listed.json()}

        back = client.post(f"/api/models/{name}/rollback", json={"reason": "regression"},
                           headers=owner)
        assert back.status_code == 200, back.text
        assert (back.json()["kind"], back.json()["version"]) == ("rollback", a)
        assert client.get(f"/api/models/{name}/versions/999/promote").status_code == 405
        missing = client.post(f"/api/models/{name}/versions/999/promote",
                              json={"reason": "x"}, headers=owner)
        assert missing.status_code == 404
        assert client.post(f"/api/models/{name}/versions/latest/promote",
                           json={"reason": "x"}, headers=owner).status_code == 422
        assert client.get("/api/models/no-such-model", headers=scientist).status_code == 404
    with session_factory(settings.sqlalchemy_url)() as session:
        rows = list(session.scalars(select(AuditRecord).where(
            AuditRecord.path.like(f"/api/models/{name}/%")).order_by(AuditRecord.id)))
    assert [(r.username, r.status, r.reason) for r in rows] == [
        ("clinician", 403, "role"), ("scientist", 403, "role"), ("scientist", 403, "role"),
        ("owner", 409, "model_promotion_refused"), ("owner", 200, "model_promoted"),
        ("admin", 200, "model_promoted"), ("owner", 200, "model_rolled_back"),
        ("owner", 404, "model_promotion_refused"), ("owner", 422, "model_promotion_refused")]


def test_cli_register_promote_list_rollback(settings: Settings, runs: dict[str, str],
                                            name: str, capsys: pytest.CaptureFixture[str]
                                            ) -> None:
    assert main(["models", "register", runs["A"], "--name", name]) == 0
    assert main(["models", "register", runs["B"], "--name", name]) == 0
    assert "as version 2 of" in capsys.readouterr().out
    assert main(["models", "promote", name, "1", "--reason", "r", "--as", "scientist"]) == 1
    assert "needs the role model_owner or admin" in capsys.readouterr().err
    assert main(["models", "promote", name, "1", "--reason", "r", "--as", "nobody"]) == 1
    assert "no such user" in capsys.readouterr().err
    assert main(["models", "promote", name, "1", "--reason", "first", "--as", "owner"]) == 0
    assert main(["models", "promote", name, "2", "--reason", "better", "--as", "owner"]) == 0
    assert "version 2 is champion" in capsys.readouterr().out
    assert main(["models", "list", name]) == 0
    out = capsys.readouterr().out
    assert "served version 2" in out and "champion" in out and "previous" in out
    assert main(["models", "rollback", name, "--reason", "regression", "--as", "admin"]) == 0
    assert "version 1 is champion" in capsys.readouterr().out
    assert served_version(settings, name).version == "1"
    assert main(["models", "register", "0" * 32, "--name", name]) == 1
    assert "does not exist" in capsys.readouterr().err
    with session_factory(settings.sqlalchemy_url)() as session:
        rows = list(session.scalars(select(AuditRecord).where(AuditRecord.service == "cli")
                                    .order_by(AuditRecord.id)))
    assert [(r.username, r.decision) for r in rows] == [
        ("scientist", "deny"), ("nobody", "deny"), ("owner", "allow"), ("owner", "allow"),
        ("admin", "allow")]
    assert all(r.client for r in rows)
