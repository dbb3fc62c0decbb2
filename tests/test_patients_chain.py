"""The patient chain (cache → FHIR → OpenEMR) against real servers on loopback: a recorded
OpenEMR (neuronova_lib.demo.openemr_server) and two FHIR servers, the platform's own facade
and Medplum's fhir-router; every chain test runs unchanged against both."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from fhir_servers import FhirBackend, facade_backend, free_port, medplum_backend
from neuronova_lib.db.engine import session_factory
from neuronova_lib.db.migrate import upgrade_database
from neuronova_lib.demo.openemr_server import RecordedOpenEMR, load_records
from neuronova_lib.patients import PatientChain, PatientNotFound
from neuronova_lib.patients.cache import PatientCache
from neuronova_lib.patients.fhir_client import FhirClient
from neuronova_lib.patients.openemr import OpenEmrClient

SYSTEM = "urn:neuronova:patient-id"
CLIENT_ID, SECRET = "neuronova-test", "s3cret-for-tests"


@pytest.fixture(scope="module",
                params=["facade", pytest.param("medplum", marks=pytest.mark.e2e)])
def fhir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[FhirBackend]:
    if request.param == "facade":
        with facade_backend(tmp_path_factory.mktemp("facade")) as backend:
            yield backend
    else:
        with medplum_backend() as backend:
            yield backend


def records_with_fresh_ids() -> tuple[list[dict[str, str]], str]:
    """The recorded records with pubpids unique to one test (servers outlive tests)."""
    tag = uuid.uuid4().hex[:8]
    records = [{**r, "pubpid": f"{r['pubpid']}-{tag}" if r["pubpid"] else ""}
               for r in load_records()]
    return records, tag


@pytest.fixture
def openemr() -> Iterator[RecordedOpenEMR]:
    records, _ = records_with_fresh_ids()
    server = RecordedOpenEMR(CLIENT_ID, SECRET, records=records)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def cache(tmp_path: Path) -> PatientCache:
    url = f"sqlite:///{tmp_path / 'chain-cache.db'}"
    upgrade_database(url)
    return PatientCache(session_factory(url))


def chain_for(cache: PatientCache, fhir: FhirBackend | str | None,
              openemr: RecordedOpenEMR | None, ttl: float = 3600.0,
              timeout: float = 3.0) -> PatientChain:
    if isinstance(fhir, str):  # a URL with nothing listening
        fhir_client = FhirClient(fhir, timeout)
    else:
        fhir_client = FhirClient(fhir.base_url, timeout, fhir.auth) if fhir else None
    emr = OpenEmrClient(openemr.url, CLIENT_ID, client_secret=SECRET,
                        timeout=timeout) if openemr else None
    return PatientChain(cache, fhir_client, emr, SYSTEM, ttl)


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}/fhir/R4"


def demo_record(server: RecordedOpenEMR, index: int = 0) -> dict[str, str]:
    return server.records[index]


def new_patient(pid: str, family: str = "Fhironly") -> dict[str, Any]:
    return {"resourceType": "Patient", "identifier": [{"system": SYSTEM, "value": pid}],
            "name": [{"family": family, "given": ["Test"]}], "gender": "other",
            "birthDate": "1966-06-06"}


def api_requests(server: RecordedOpenEMR) -> list[str]:
    return [r for r in server.requests if "/apis/" in r]


# -- the paths of the chain ----------------------------------------------------------


def test_fhir_hit_is_written_back_then_served_from_cache(
        fhir: FhirBackend, openemr: RecordedOpenEMR, cache: PatientCache) -> None:
    pid = f"FHIR-{uuid.uuid4().hex[:10]}"
    stored = fhir.create(new_patient(pid))
    found = chain_for(cache, fhir, openemr).resolve(pid)
    assert (found.source, found.unavailable) == ("fhir", {})
    assert found.patient["id"] == stored["id"]
    assert api_requests(openemr) == []  # OpenEMR never asked
    entry = cache.get(pid)
    assert entry is not None and entry.fhir_id == stored["id"] and entry.source == "fhir"
    # Cache hit: answered without FHIR or OpenEMR (neither could answer now).
    again = chain_for(cache, dead_url(), None).resolve(pid)
    assert (again.source, again.stale, again.asked) == ("cache", False, ["cache"])
    assert again.patient["name"][0]["family"] == "Fhironly"


def test_openemr_hit_is_converted_created_on_fhir_and_cached(
        fhir: FhirBackend, openemr: RecordedOpenEMR, cache: PatientCache) -> None:
    record = demo_record(openemr, 0)
    pid = record["pubpid"]
    chain = chain_for(cache, fhir, openemr)
    found = chain.resolve(pid)
    assert (found.source, found.on_fhir, found.asked) == ("openemr", True,
                                                          ["cache", "fhir", "openemr"])
    patient = found.patient
    assert patient["id"]  # the FHIR server's id
    assert patient["name"][0]["family"] == record["lname"]
    assert patient["birthDate"] == record["DOB"]
    assert patient["gender"] == record["sex"].lower()
    systems = {i["system"]: i["value"] for i in patient["identifier"]}
    assert systems[SYSTEM] == pid and systems["urn:neuronova:openemr:pid"] == record["pid"]
    assert fhir.count(SYSTEM, pid) == 1
    entry = cache.get(pid)
    assert entry is not None and entry.fhir_id == patient["id"] and entry.source == "openemr"
    assert chain.resolve(pid).source == "cache"
    # OpenEMR was reached as documented: a client-credentials token, then the search.
    assert openemr.requests[0] == "POST /oauth2/default/token"
    assert api_requests(openemr) == [f"GET /apis/default/api/patient?pubpid={pid}"]


def test_miss_everywhere_names_the_sources(fhir: FhirBackend, openemr: RecordedOpenEMR,
                                           cache: PatientCache) -> None:
    with pytest.raises(PatientNotFound) as missing:
        chain_for(cache, fhir, openemr).resolve(f"NOBODY-{uuid.uuid4().hex[:8]}")
    assert missing.value.asked == ["cache", "fhir", "openemr"]
    assert missing.value.unavailable == {}
    assert "was not found in cache, fhir, openemr" in str(missing.value)


def test_fhir_down_openemr_still_answers_and_fhir_gets_it_later(
        fhir: FhirBackend, openemr: RecordedOpenEMR, cache: PatientCache) -> None:
    pid = demo_record(openemr, 3)["pubpid"]
    found = chain_for(cache, dead_url(), openemr).resolve(pid)
    assert (found.source, found.on_fhir) == ("openemr", False)
    assert set(found.unavailable) == {"fhir"} and found.unavailable["fhir"].startswith("down")
    assert cache.get(pid) is not None and fhir.count(SYSTEM, pid) == 0
    # FHIR is back: the next request writes the cached patient to it (once).
    back = chain_for(cache, fhir, openemr).resolve(pid)
    assert back.on_fhir and back.unavailable == {}
    assert fhir.count(SYSTEM, pid) == 1
    assert chain_for(cache, fhir, openemr).resolve(pid).source == "cache"


@pytest.mark.parametrize("mode", ["garbage", "slow", "error"])
def test_openemr_failing_is_unavailable_not_missing_and_nothing_is_cached(
        fhir: FhirBackend, openemr: RecordedOpenEMR, cache: PatientCache, mode: str) -> None:
    pid = demo_record(openemr, 1)["pubpid"]
    chain = chain_for(cache, fhir, openemr, timeout=0.5)
    chain.openemr.token()  # type: ignore[union-attr]  # the token endpoint still works
    openemr.mode, openemr.delay = mode, 2.0
    with pytest.raises(PatientNotFound) as missing:
        chain.resolve(pid)
    why = missing.value.unavailable["openemr"]
    expected = {"garbage": "garbage", "slow": "timeout", "error": "error"}[mode]
    assert why.startswith(expected), why
    if mode == "garbage":
        assert "not JSON" in why and "Fatal error" in why  # says what came back
    assert "may exist there" in str(missing.value)
    assert cache.get(pid) is None and fhir.count(SYSTEM, pid) == 0
    openemr.mode = "normal"
    assert chain.resolve(pid).source == "openemr"  # and recovers when OpenEMR does


def test_a_record_that_makes_no_valid_patient_is_refused(
        fhir: FhirBackend, openemr: RecordedOpenEMR, cache: PatientCache) -> None:
    record = demo_record(openemr, 2)
    record["DOB"] = "13/07/1975"  # not a date FHIR takes
    with pytest.raises(PatientNotFound) as missing:
        chain_for(cache, fhir, openemr).resolve(record["pubpid"])
    assert "birthDate" in missing.value.unavailable["openemr"]
    assert cache.get(record["pubpid"]) is None


def test_concurrent_requests_make_one_fhir_resource(
        fhir: FhirBackend, openemr: RecordedOpenEMR, tmp_path: Path) -> None:
    pid = demo_record(openemr, 4)["pubpid"]
    # Four "API workers" (own chains, own locks, own caches) with four threads each.
    chains = []
    for n in range(4):
        url = f"sqlite:///{tmp_path / f'worker-{n}.db'}"
        upgrade_database(url)
        chains.append(chain_for(PatientCache(session_factory(url)), fhir, openemr))
    barrier = threading.Barrier(16)
    results: list[Any] = []

    def ask(chain: PatientChain) -> None:
        barrier.wait()
        try:
            results.append(chain.resolve(pid).patient["id"])
        except Exception as exc:  # noqa: BLE001 (reported below)
            results.append(exc)

    threads = [threading.Thread(target=ask, args=(chains[n % 4],)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == 16 and all(isinstance(r, str) for r in results), results
    assert len(set(results)) == 1
    assert fhir.count(SYSTEM, pid) == 1


def test_stale_entry_is_refreshed_from_fhir_or_kept_while_sources_are_down(
        fhir: FhirBackend, openemr: RecordedOpenEMR, cache: PatientCache) -> None:
    pid = f"STALE-{uuid.uuid4().hex[:8]}"
    stored = fhir.create(new_patient(pid, family="Before"))
    assert chain_for(cache, fhir, openemr, ttl=0).resolve(pid).source == "fhir"
    fhir.put({**stored, "name": [{"family": "After"}]})
    refreshed = chain_for(cache, fhir, openemr, ttl=0).resolve(pid)
    assert refreshed.source == "fhir" and refreshed.patient["name"][0]["family"] == "After"
    kept = chain_for(cache, dead_url(), None, ttl=0).resolve(pid)
    assert (kept.source, kept.stale) == ("cache", True)
    assert set(kept.unavailable) == {"fhir"}
    assert kept.patient["name"][0]["family"] == "After"


# -- OpenEMR's protocol ---------------------------------------------------------------


def test_openemr_token_expiry_gets_a_new_token(openemr: RecordedOpenEMR) -> None:
    client = OpenEmrClient(openemr.url, CLIENT_ID, client_secret=SECRET)
    first, second = openemr.records[0], openemr.records[1]
    assert client.find_patient(first["pubpid"])["pid"] == first["pid"]  # type: ignore[index]
    openemr.expire_tokens()
    assert client.find_patient(second["pubpid"])["pid"] == second["pid"]  # type: ignore[index]
    tokens = [r for r in openemr.requests if r.startswith("POST /oauth2/")]
    assert len(tokens) == 2  # one at first, one after the 401


def test_openemr_jwt_client_assertion_and_refusals(openemr: RecordedOpenEMR) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    openemr.public_key = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    signed = OpenEmrClient(openemr.url, CLIENT_ID, private_key=pem)
    assert signed.find_patient(openemr.records[0]["pubpid"]) is not None
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    from neuronova_lib.patients import SourceUnavailable
    for client in (OpenEmrClient(openemr.url, CLIENT_ID, private_key=other),
                   OpenEmrClient(openemr.url, CLIENT_ID, client_secret="wrong")):
        with pytest.raises(SourceUnavailable) as refused:
            client.token()
        assert refused.value.kind == "refused" and "invalid_client" in refused.value.detail


def test_openemr_search_follows_pages(openemr: RecordedOpenEMR) -> None:
    client = OpenEmrClient(openemr.url, CLIENT_ID, client_secret=SECRET)
    found = client.search_patients({"lname": "Garcia"}, page_size=1)
    assert sorted(r["fname"] for r in found) == ["Luis", "Maria"]
    pages = [r for r in api_requests(openemr) if "lname=Garcia" in r]
    assert len(pages) == 2 and "_offset=1" in pages[1]


def test_search_by_name_across_sources(fhir: FhirBackend, openemr: RecordedOpenEMR,
                                       cache: PatientCache) -> None:
    family = f"Zz{uuid.uuid4().hex[:6]}"
    fhir.create(new_patient(f"S-{family}", family=family))
    patients, asked, unavailable = chain_for(cache, fhir, openemr).search(family)
    assert [p["name"][0]["family"] for p in patients] == [family]
    assert asked == ["fhir", "openemr", "cache"] and unavailable == {}
    smiths, _, _ = chain_for(cache, fhir, openemr).search("Smith")
    assert {p["name"][0]["given"][0] for p in smiths} >= {"John", "Jane"}


def test_bad_patient_id_is_refused(cache: PatientCache) -> None:
    with pytest.raises(ValueError, match="DICOM Patient ID"):
        chain_for(cache, None, None).resolve("a\\b")


@pytest.mark.parametrize("mode", ["garbage", "slow", "error"])
def test_fhir_failing_is_reported_and_openemr_still_answers(
        openemr: RecordedOpenEMR, cache: PatientCache, mode: str) -> None:
    # A server that answers every request badly stands in for a broken FHIR server.
    bad = RecordedOpenEMR("nobody")
    bad.start()
    try:
        bad.mode, bad.delay = mode, 2.0
        chain = chain_for(cache, f"{bad.url}/fhir/R4", openemr, timeout=0.5)
        found = chain.resolve(demo_record(openemr, 5)["pubpid"])
    finally:
        bad.stop()
    assert (found.source, found.on_fhir) == ("openemr", False)
    expected = {"garbage": "garbage", "slow": "timeout", "error": "error"}[mode]
    assert found.unavailable["fhir"].startswith(expected), found.unavailable


def test_without_a_fhir_server_the_cache_still_serves(openemr: RecordedOpenEMR,
                                                      cache: PatientCache) -> None:
    pid = demo_record(openemr, 6)["pubpid"]
    chain = chain_for(cache, None, openemr)
    assert chain.resolve(pid).source == "openemr"
    assert chain.resolve(pid).source == "cache"
    assert len(api_requests(openemr)) == 1
