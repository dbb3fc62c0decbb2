"""Orthanc with its index in PostgreSQL (the scale set-up the README documents)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from neuronova_lib.orthanc_store import OrthancStore
from neuronova_lib.stack.local import local_settings
from neuronova_lib.stack.platform import prepare_home
from neuronova_lib.stack.render import ORTHANC_PLUGIN_DIR
from neuronova_lib.stack.services import orthanc_service
from neuronova_lib.stack.supervisor import Supervisor

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_orthanc_keeps_its_index_in_postgresql(postgres_socket: Path, tmp_path: Path) -> None:
    if not (ORTHANC_PLUGIN_DIR / "libOrthancPostgreSQLIndex.so").exists():
        pytest.fail("orthanc-postgresql is missing: run `make test` (it installs it)")
    import psycopg

    with psycopg.connect(f"host={postgres_socket} user=postgres dbname=postgres",
                         autocommit=True) as conn:
        conn.execute("create database orthanc_index")
    uri = f"postgresql:///orthanc_index?host={postgres_socket}&user=postgres"
    settings = local_settings(tmp_path / "home", orthanc_postgres_uri=uri)
    prepare_home(settings)
    supervisor = Supervisor([orthanc_service(settings)], settings.log_dir)
    supervisor.start()
    try:
        store = OrthancStore.from_settings(settings)
        answer = store.store_file(get_testdata_file("MR_small.dcm"))
        assert answer["Status"] == "Success"
        assert "libOrthancPostgreSQLIndex" in store.get_json("/system")["DatabaseBackendPlugin"]
        with psycopg.connect(f"host={postgres_socket} user=postgres dbname=orthanc_index") as conn:
            (count,) = conn.execute("select count(*) from resources where resourcetype = 3").fetchone()
        assert count == 1  # one instance row, in PostgreSQL
    finally:
        supervisor.stop()  # before PostgreSQL goes: Orthanc's shutdown hangs otherwise
