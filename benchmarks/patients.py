#!/usr/bin/env python3
"""Patient chain latency: a cache hit, a FHIR hit and an OpenEMR hit, in one run.

A private API (uvicorn, its FHIR R4 facade on SQLite, as ``neuronova up`` starts it) and
the recorded OpenEMR server (``neuronova_lib.demo.openemr_server``) run as processes on
free loopback ports; the chain runs in this process, as it does inside the API.

For ``--patients`` fresh Patient IDs (copies of the recorded records with unique pubpids):

* ``openemr_hit`` — empty cache, not on FHIR: FHIR search (miss) → OpenEMR search (one
  OAuth2 token for the run) → convert + validate → FHIR conditional create → cache write;
* ``fhir_hit`` — a second chain with an empty cache: FHIR search (hit) → cache write;
* ``cache_hit`` — the second chain again: one primary-key read of the cache;
* ``baseline_fhir_read`` — ``GET Patient/{id}`` on the same FHIR server with the same
  client: one authenticated, audited read, the floor of any step that asks FHIR.

Each figure is p50/p99 in milliseconds; ``ratio_to_baseline`` divides each p50 by the
baseline's p50. Run: ``.venv/bin/python benchmarks/patients.py > patients.json``.
"""

from __future__ import annotations

import argparse
import json
import platform as host
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from neuronova_lib.db.engine import session_factory
from neuronova_lib.db.migrate import upgrade_database
from neuronova_lib.demo.openemr_server import load_records
from neuronova_lib.patients import PatientChain
from neuronova_lib.patients.cache import PatientCache
from neuronova_lib.patients.fhir_client import BearerAuth, FhirClient
from neuronova_lib.patients.openemr import OpenEmrClient
from neuronova_lib.security.tokens import token_service
from neuronova_lib.stack.local import free_port, local_settings
from neuronova_lib.stack.platform import prepare_home
from neuronova_lib.stack.services import api_service
from neuronova_lib.stack.supervisor import Service, Supervisor


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {"p50_ms": round(statistics.median(ordered) * 1000, 3),
            "p99_ms": round(p99 * 1000, 3), "n": len(ordered)}


def timed(calls: list[Callable[[], Any]]) -> list[float]:
    samples = []
    for call in calls:
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return samples


def new_cache(folder: Path, name: str) -> PatientCache:
    url = f"sqlite:///{folder / name}"
    upgrade_database(url)
    return PatientCache(session_factory(url))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=200,
                        help="fresh patients measured per path (default 200)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="neuronova-bench-patients-"))
    settings = local_settings(work / "home")
    prepare_home(settings)
    system = settings.patient_id_system

    tag = uuid.uuid4().hex[:6]
    recorded = [r for r in load_records() if r["pubpid"]]
    records = [{**recorded[n % len(recorded)], "pubpid": f"BENCH-{tag}-{n:05d}",
                "pid": str(100000 + n), "uuid": str(uuid.uuid4())}
               for n in range(args.patients)]
    (work / "records.json").write_text(json.dumps({"patients": records}))
    (work / "client.json").write_text(json.dumps({"client_id": "bench",
                                                  "client_secret": "bench-secret"}))
    emr_port = free_port()
    openemr = Service(
        name="openemr-recorded",
        argv=[sys.executable, "-m", "neuronova_lib.demo.openemr_server", "--port",
              str(emr_port), "--client-secret-file", str(work / "client.json"),
              "--records", str(work / "records.json")],
        cwd=Path(__file__).resolve().parents[1],
        health=lambda: httpx.get(f"http://127.0.0.1:{emr_port}/apis/default/api/patient",
                                 timeout=2).status_code == 401,
        ports=[("127.0.0.1", emr_port, "--port")],
    )
    supervisor = Supervisor([openemr, api_service(settings)], settings.log_dir)
    supervisor.start()
    try:
        tokens = token_service(settings)
        auth = BearerAuth(tokens.mint("admin", "admin", "access", 3600)[0])
        base = f"http://127.0.0.1:{settings.api_port}/fhir/R4"
        fhir = FhirClient(base, 10.0, auth)
        emr = OpenEmrClient(f"http://127.0.0.1:{emr_port}", "bench",
                            client_secret="bench-secret", timeout=10.0)
        ids = [r["pubpid"] for r in records]
        first = PatientChain(new_cache(work, "first.db"), fhir, emr, system, 3600)
        second = PatientChain(new_cache(work, "second.db"), fhir, emr, system, 3600)
        # Warm-up: connections, the OAuth2 token, the facade's first queries.
        first.resolve(ids[0])
        second.resolve(ids[0])
        ids = ids[1:]
        log(f"measuring {len(ids)} patients per path")
        results: dict[str, list[float]] = {}
        sources: dict[str, set[str]] = {}

        def run(name: str, chain: PatientChain) -> None:
            seen: set[str] = set()
            results[name] = timed([lambda pid=pid: seen.add(chain.resolve(pid).source)
                                   for pid in ids])
            sources[name] = seen

        run("openemr_hit", first)
        run("fhir_hit", second)
        run("cache_hit", second)
        fhir_ids = [second.resolve(pid).patient["id"] for pid in ids]
        results["baseline_fhir_read"] = timed(
            [lambda fid=fid: fhir.client.get(f"{base}/Patient/{fid}", auth=auth
                                             ).raise_for_status() for fid in fhir_ids])
        expected = {"openemr_hit": {"openemr"}, "fhir_hit": {"fhir"}, "cache_hit": {"cache"}}
        assert sources == expected, f"a path answered from the wrong source: {sources}"
        figures = {name: percentiles(samples) for name, samples in results.items()}
        floor = figures["baseline_fhir_read"]["p50_ms"]
        for name in ("cache_hit", "fhir_hit", "openemr_hit"):
            figures[name]["ratio_to_baseline"] = round(figures[name]["p50_ms"] / floor, 3)
        print(json.dumps({
            "benchmark": "patients",
            "patients_per_path": len(ids),
            "fhir_server": "platform facade (API under uvicorn, SQLite)",
            "openemr": "recorded OpenEMR server (http.server, loopback)",
            "cpu_count": __import__("os").cpu_count(),
            "python": host.python_version(),
            "results": figures,
        }, indent=2))
    finally:
        supervisor.stop()


if __name__ == "__main__":
    main()
