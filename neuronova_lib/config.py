"""The one settings object, read from ``NEURONOVA_*`` environment variables.

Every service, command and test takes its paths, ports and limits from here so
that a deployment changes environment variables, never code.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The checkout this library runs from; the stack finds ``nginx/`` and ``orthanc/`` here.
REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Platform configuration; each field is the variable ``NEURONOVA_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="NEURONOVA_", extra="ignore")

    home: Path = Field(
        default=Path(".neuronova"),
        description="Data dir: databases, Orthanc storage, secrets, logs, rendered configs.",
    )
    host: str = Field(default="127.0.0.1", description="Address nginx listens on.")
    port: int = Field(default=8080, description="nginx port: the only entry for users.")
    api_port: int = Field(default=8101, description="Platform API (uvicorn, loopback).")
    proxy_port: int = Field(default=8102, description="Guard proxy (uvicorn, loopback).")
    orthanc_port: int = Field(default=8142, description="Orthanc HTTP (loopback only).")
    orthanc_dicom_port: int = Field(default=4242, description="Orthanc DICOM listener.")
    orthanc_dicom_enabled: bool = Field(
        default=False, description="Open Orthanc's DICOM listener (C-STORE from modalities)."
    )
    orthanc_modalities: dict[str, list[str | int]] = Field(
        default_factory=dict,
        description='Known modalities, as JSON: {"CT1": ["AET", "10.0.0.5", 104]}.',
    )
    orthanc_wado_plugin: bool = Field(
        default=True,
        description="Serve frames and rendered images through NeuroNova's Orthanc plugin "
        "(orthanc-python), which handles HTJ2K; off: Orthanc's DICOMweb plugin alone.",
    )
    orthanc_memory_debug: bool = Field(
        default=False,
        description="Debug only: a tracemalloc view of the WADO plugin's Python memory at "
        "/neuronova/debug/memory/{start,snapshot,stop} on Orthanc's own port.",
    )
    orthanc_postgres_uri: str | None = Field(
        default=None,
        description="PostgreSQL URI for Orthanc's index (postgresql://user:pw@host:port/db).",
    )
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default SQLite in the data dir."
    )
    access_token_ttl: int = Field(default=900, ge=30, description="Access token lifetime (s).")
    refresh_token_ttl: int = Field(default=8 * 3600, ge=60, description="Refresh lifetime (s).")
    signed_url_ttl: int = Field(default=300, ge=10, description="Default signed URL TTL (s).")
    signed_url_ttl_max: int = Field(default=900, ge=10, description="Cap on signed URL TTL (s).")
    jwt_audience: str = Field(default="neuronova", description="`aud` of access tokens.")
    jwt_issuer: str = Field(default="neuronova", description="`iss` of every token.")
    demo_password: str | None = Field(
        default=None, description="Password of the demo users; generated when unset."
    )
    api_rate: str = Field(default="20r/s", description="nginx limit_req rate on /api/.")
    api_burst: int = Field(default=40, description="nginx limit_req burst on /api/.")
    max_body_size: str = Field(default="512m", description="Largest upload nginx accepts.")
    demo_cases: int = Field(default=2, ge=0, description="Demo studies `up` loads.")
    demo_htj2k: bool = Field(
        default=True, description="Store the demo studies as HTJ2K lossless (verified)."
    )
    demo_size: Literal["brats", "small"] = Field(
        default="brats", description="Demo grid: brats (240×240×155, 1 mm) or small (fast)."
    )

    upload_max_files: int = Field(
        default=10000, ge=1,
        description="Most files one upload (POST /api/studies) may hold, zip members included.",
    )
    upload_max_bytes: int = Field(
        default=8 * 1024**3, ge=1,
        description="Most bytes one upload may hold once zips are expanded (zip-bomb guard).",
    )
    dask_scheduler: str | None = Field(
        default=None,
        description="tcp://host:port of a Dask scheduler for upload jobs; unset: a local "
        "cluster (one worker process) is started for each job.",
    )

    # Ingest gate (neuronova_lib.ingest): every file a user sends is checked in a sandboxed
    # worker before it may reach Orthanc; refused files are kept in quarantine.
    ingest_max_bytes: int = Field(
        default=2 * 1024**3, ge=1024, description="Largest single DICOM file the gate accepts."
    )
    ingest_max_depth: int = Field(
        default=16, ge=1, le=40,
        description="Deepest sequence nesting accepted (Orthanc's DCMTK dies near 48).",
    )
    ingest_max_elements: int = Field(
        default=200_000, ge=100, description="Most data elements (all levels) in one file."
    )
    ingest_max_samples: int = Field(
        default=2**29, ge=1,
        description="Cap on Rows x Columns x Frames x SamplesPerPixel (decompression bombs).",
    )
    ingest_decode_all_frames: bool = Field(
        default=False, description="Decode every frame of compressed images (else the first)."
    )
    ingest_sop_classes: list[str] | None = Field(
        default=None,
        description="SOP Class UIDs the gate accepts, as JSON; unset: common image classes.",
    )
    ingest_workers: int = Field(default=2, ge=1, le=64, description="Gate worker processes.")
    ingest_timeout: float = Field(
        default=60.0, gt=0, description="Wall-clock seconds one file may take to check."
    )
    ingest_cpu_seconds: int = Field(
        default=60, ge=1, description="CPU seconds one file may take to check (RLIMIT_CPU)."
    )
    ingest_memory_bytes: int = Field(
        default=6 * 1024**3, ge=256 * 1024**2,
        description="Address-space limit of a gate worker (RLIMIT_AS).",
    )
    ingest_orthanc_wait: float = Field(
        default=60.0, gt=0,
        description="Seconds an ingest waits for Orthanc to come back (restart) before it "
        "reports an instance as not stored.",
    )
    stow_max_instances: int = Field(
        default=10_000, ge=1, description="Most instances one STOW-RS request may carry."
    )
    quarantine_retention_days: float = Field(
        default=30.0, gt=0, description="Days refused files stay in quarantine before purge."
    )

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    # Paths derived from the data dir, so that nothing else spells them out.
    @property
    def secrets_dir(self) -> Path:
        return self.home / "secrets"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def quarantine_dir(self) -> Path:
        return self.home / "quarantine"

    @property
    def orthanc_storage(self) -> Path:
        return self.home / "orthanc-storage"

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'neuronova.db'}"

    @property
    def public_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def orthanc_url(self) -> str:
        return f"http://127.0.0.1:{self.orthanc_port}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; tests clear the cache after changing the environment."""
    return Settings()
