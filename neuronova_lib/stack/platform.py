"""What ``neuronova up`` does around the supervisor: the data dir, secrets, database, demo data."""

from __future__ import annotations

import io
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..config import Settings
from ..db.migrate import upgrade_database
from ..db.users import ensure_demo_users
from ..security.keyring import KeyRing
from ..security.secret_store import ensure_private_dir, orthanc_service_account

log = logging.getLogger(__name__)


def prepare_home(settings: Settings) -> dict[str, str] | None:
    """Create the data dir, its secrets and the database; return new demo credentials."""
    settings.home.mkdir(parents=True, exist_ok=True)
    os.chmod(settings.home, 0o700)
    ensure_private_dir(settings.secrets_dir)
    for folder in (settings.log_dir, settings.run_dir, settings.orthanc_storage):
        folder.mkdir(parents=True, exist_ok=True)
    orthanc_service_account(settings.secrets_dir)
    KeyRing(settings.secrets_dir / "jwt-keys.json")
    upgrade_database(settings.sqlalchemy_url)
    return ensure_demo_users(settings)


def demo_dir(settings: Settings) -> Path:
    return settings.home / "demo"


DEMO_SEED = 20261128


def ensure_demo_files(settings: Settings, cases: int) -> Path:
    """Write the demo studies once per size; a later ``up`` with as many cases reuses them."""
    from ..demo import write_demo_cases
    from ..demo.phantom import SIZES

    out = demo_dir(settings) / settings.demo_size
    manifest = out / "manifest.json"
    if manifest.exists():
        existing = json.loads(manifest.read_text())
        if len(existing.get("cases", [])) >= cases and existing.get("skull_stripped"):
            return out
    shape, spacing = SIZES[settings.demo_size]
    # Skull-stripped, as BraTS data and so as the demo model's training cases are.
    write_demo_cases(out, cases=cases, seed=DEMO_SEED, shape=shape, spacing=spacing,
                     skull_stripped=True, overwrite=True, progress=True)
    return out


def _htj2k_bytes(path: Path) -> bytes:
    """The file re-encoded to HTJ2K lossless, verified pixel for pixel by the transcoder."""
    import pydicom

    from ..transcode import transcode_to_htj2k

    ds = transcode_to_htj2k(pydicom.dcmread(path))
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def load_folder(settings: Settings, folder: Path, *, htj2k: bool = True,
                workers: int = 2, progress: bool = False) -> dict[str, Any]:
    """Store every ``*.dcm`` under ``folder`` in Orthanc, as HTJ2K lossless by default.

    Each file goes through the ingest gate and the ingest core like any
    upload (route ``demo``), so the demo loader obeys the archive's rules too
    (a UID is unique). Storing again is harmless (``AlreadyStored``). Bulk
    imports go through ``neuronova transcode`` on Dask.
    """
    from ..demo.progress import Progress
    from ..ingest import Gate
    from ..ingest.store import Ingestor

    files = sorted(folder.rglob("*.dcm"))
    counts: dict[str, int] = {}
    meter = Progress(len(files), "storing in Orthanc", enabled=progress, unit="instance")
    try:
        with Gate(settings) as gate, ThreadPoolExecutor(max_workers=workers) as pool:
            ingestor = Ingestor(settings, gate)

            def store_one(path: Path) -> str:
                data = _htj2k_bytes(path) if htj2k else path.read_bytes()
                outcome = ingestor.ingest(data, sender="neuronova-demo", route="demo")
                if outcome.stored:
                    return "AlreadyStored" if outcome.duplicate else "Success"
                log.warning("demo file %s not stored: %s: %s", path, outcome.reason,
                            outcome.message)
                return str(outcome.reason)

            for status in pool.map(store_one, files):
                counts[status] = counts.get(status, 0) + 1
                meter.step()
    finally:
        meter.close()
    return {"files": len(files), "status": counts,
            "transfer_syntax": "HTJ2K lossless" if htj2k else "as written"}


def load_demo(settings: Settings, folder: Path) -> str:
    """Store the demo studies; as HTJ2K through the bulk pipeline (Dask) unless turned off.

    Returns one line for the welcome message. Running it again stores nothing
    new: the bulk manifest remembers what is done.
    """
    dicom_dirs = sorted(str(d) for d in folder.glob("case-*/dicom"))
    if not settings.demo_htj2k:
        result = load_folder(settings, folder, htj2k=False, progress=True)
        return f"{result['files']} instances, uncompressed ({folder})"
    from ..bulk import transcode_sources
    from ..compute import scheduler_for_run

    summary = transcode_sources(dicom_dirs, settings=settings, route="demo",
                                scheduler=scheduler_for_run(settings),
                                sender="neuronova-demo", progress=True)
    if summary.exit_code != 0:
        log.warning("demo transcoding: %s (report: %s)", summary.line(), summary.report)
    return f"HTJ2K lossless via Dask: {summary.line()} ({folder})"


def seed_demo_fhir_patients(settings: Settings, store: Any, chain: Any, auth: Any) -> int:
    """Put every second stored study's patient on the platform's FHIR server before the
    chain runs (from the recorded OpenEMR data), as a hospital's FHIR server holds some
    patients already: ``up`` then exercises both the FHIR hit (written back to the cache)
    and the OpenEMR hit (converted, created on FHIR, cached)."""
    from ..demo.openemr_server import load_records
    from ..patients.convert import openemr_to_fhir

    records = {record.get("pubpid"): record for record in load_records()}
    patient_ids = sorted({store.get_json(f"/studies/{orthanc_id}")
                          .get("PatientMainDicomTags", {}).get("PatientID", "")
                          for orthanc_id in store.study_ids()})
    seeded = 0
    for patient_id in patient_ids[::2]:
        if patient_id in records:
            resource = openemr_to_fhir(records[patient_id], settings.patient_id_system)
            chain.fhir.create_if_none(resource, settings.patient_id_system, patient_id, auth)
            seeded += 1
    return seeded


def publish_demo_records(settings: Settings) -> str:
    """Give every stored study its FHIR ImagingStudy, its patient resolved through the
    chain (the recorded OpenEMR demo server has the demo patients); one welcome line."""
    from ..db.engine import session_factory
    from ..orthanc_store import OrthancStore
    from ..patients import build_chain
    from ..patients.fhir_client import BearerAuth
    from ..patients.imaging import publish_imaging_studies
    from ..security.tokens import token_service
    from .services import with_demo_openemr

    effective = with_demo_openemr(settings)
    chain = build_chain(effective, session_factory(settings.sqlalchemy_url),
                        f"http://127.0.0.1:{settings.api_port}/fhir/R4")
    tokens = token_service(settings)
    auth = None if settings.fhir_url else BearerAuth(
        lambda: tokens.mint("admin", "admin", "access", 120)[0])
    try:
        store = OrthancStore.from_settings(settings)
        seeded = 0
        if not settings.fhir_url and effective.openemr_url != settings.openemr_url:
            seeded = seed_demo_fhir_patients(settings, store, chain, auth)
        counts = publish_imaging_studies(store, chain, auth)
    except Exception as exc:  # noqa: BLE001 (the platform is up; say what is missing)
        log.exception("publishing ImagingStudy resources failed")
        return f"no FHIR ImagingStudy published ({exc}; see the log)"
    finally:
        chain.close()
    line = f"{counts['published']} of {counts['studies']} studies have a FHIR ImagingStudy"
    if seeded:
        line += f" ({seeded} of their patients were on the FHIR server already)"
    if counts["no_patient"] or counts["failed"]:
        line += (f" ({counts['no_patient']} without a patient record, {counts['failed']} "
                 "failed: see the log)")
    return line
