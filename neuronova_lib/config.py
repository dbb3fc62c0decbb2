"""The one settings object, read from ``NEURONOVA_*`` environment variables.

Every service, command and test takes its paths, ports and limits from here so
that a deployment changes environment variables, never code.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The checkout this library runs from; the stack finds ``nginx/`` and ``orthanc/`` here.
REPO_ROOT = Path(__file__).resolve().parent.parent

#: What a NEURONOVA_PUBLIC_URL path may hold: nginx passes it to Orthanc's DICOMweb plugin
#: in an RFC 7239 ``Forwarded`` header, unquoted (the plugin reads no quoted value), where
#: ``;`` ``,`` ``=`` ``"`` and spaces would end or split it and ``$`` is an nginx variable.
_PUBLIC_PATH = re.compile(r"[A-Za-z0-9._~%/:@!*+-]*")


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
    # The platform's own DICOM listener (neuronova_lib.dimse); Orthanc's stays off always.
    dicom_enabled: bool = Field(
        default=False,
        description="Run the platform's DICOM listener: C-STORE from known modalities, each "
        "instance through the ingest gate (Orthanc's own DICOM listener is never opened).",
    )
    dicom_host: str = Field(
        default="0.0.0.0", description="Address the DICOM listener binds (modalities reach it)."
    )
    dicom_port: int = Field(default=4242, description="DICOM listener port (C-STORE, C-ECHO).")
    dicom_aet: str = Field(
        default="NEURONOVA", min_length=1, max_length=16,
        description="The listener's AE title; associations called to another title are refused.",
    )
    dicom_modalities: dict[str, list[str | int]] = Field(
        default_factory=dict,
        description='Modalities that may store, as JSON {"NAME": ["AET", "host", port]}: only '
        "these calling AE titles, from these hosts, are accepted at association.",
    )
    orthanc_wado_plugin: bool = Field(
        default=True,
        description="Serve frames and rendered images through NeuroNova's Orthanc plugin "
        "(orthanc-python), which handles HTJ2K; off: Orthanc's DICOMweb plugin alone.",
    )
    frame_store: bool = Field(
        default=True,
        description="Keep ready-to-send WADO-RS frame answers under the data dir's frames/ "
        "(written by the Orthanc plugin when an instance is stored) and let nginx serve them "
        "after the guard's decision; off: every frame goes through the Orthanc plugin.",
    )
    frame_decision_cache: bool = Field(
        default=True,
        description="nginx caches the guard's allow decisions for frames and series metadata, "
        "keyed on the token and the study, never past the token's expiry nor longer than "
        "NEURONOVA_REVOCATION_BOUND; off: the guard decides every request.",
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
    viewer_token_ttl: int = Field(
        default=900, ge=10,
        description="Lifetime (s) of the study-scoped token in a link that opens a study in "
        "OHIF (/api/studies/{uid}/ohif); capped by NEURONOVA_SIGNED_URL_TTL_MAX.",
    )
    jwt_audience: str = Field(default="neuronova", description="`aud` of access tokens.")
    jwt_issuer: str = Field(default="neuronova", description="`iss` of every token.")
    demo_password: str | None = Field(
        default=None,
        description="For scripted demos only: one password for every demo user; unset, "
        "each demo user gets its own generated password.",
    )
    # Revocation and sign-in throttling (neuronova_lib.db.revocation, .throttle).
    revocation_bound: float = Field(
        default=5.0, gt=0, le=60,
        description="Seconds within which the guard refuses a disabled user, a changed role "
        "or a revoked token (it reloads its revocation snapshot every half of this).",
    )
    signin_free_failures: int = Field(
        default=3, ge=1, description="Failed sign-ins of one account before delays start."
    )
    signin_delay_max: float = Field(
        default=300.0, gt=0,
        description="Longest wait (s) imposed on an account after failed sign-ins; the "
        "wait doubles from 1 s with each failure past the free ones.",
    )
    signin_failure_window: float = Field(
        default=900.0, gt=0,
        description="Seconds without a failed sign-in after which an account's count resets.",
    )
    # Browser sign-in (services/api/routes/signin.py, neuronova_lib/db/browser_sessions.py).
    session_ttl: int = Field(
        default=8 * 3600, ge=60,
        description="Absolute lifetime (s) of a browser session (cookie neuronova_session): "
        "signed out this long after signing in, however active.",
    )
    session_idle_ttl: int = Field(
        default=1800, ge=60,
        description="A browser session unused this long (s) ends (idle timeout).",
    )
    session_touch_interval: int = Field(
        default=60, ge=1,
        description="A session's last use is written at most this often (s): nginx asks "
        "/api/auth/check on every browser request, which must stay a single read.",
    )
    api_rate: str = Field(default="20r/s", description="nginx limit_req rate on /api/.")
    api_burst: int = Field(default=40, description="nginx limit_req burst on /api/.")
    public_url: str = Field(
        default="",
        description="The platform's address as users reach it (scheme, host, port, path "
        "prefix), e.g. https://pacs.example.org/neuronova behind TLS or another proxy: signed "
        "URLs, STOW-RS RetrieveURLs and the RetrieveURLs and BulkDataURIs Orthanc writes into "
        "QIDO and metadata answers start with it. Unset: http://HOST:PORT (nginx).",
    )
    token_concurrency: int = Field(
        default=32, ge=1,
        description="Most DICOMweb requests one token may have in flight (nginx limit_conn); "
        "more are answered 429 with Retry-After. Viewers open 6-16 at a time.",
    )
    retry_after: int = Field(
        default=1, ge=1, description="Retry-After (s) on nginx's 429 (rate and concurrency)."
    )
    retrieve_max_instances: int = Field(
        default=2000, ge=1,
        description="Most instances one WADO-RS study or series retrieve may return; larger "
        "ones are refused (413) with a hint to retrieve per series or per instance.",
    )
    retrieve_max_bytes: int = Field(
        default=512 * 1024**2, ge=1024**2,
        description="Most stored bytes one WADO-RS study or series retrieve may return.",
    )
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
        description="tcp://host:port of an existing Dask scheduler: the platform's Dask work "
        "(upload jobs, `neuronova transcode`, inference) runs there and `up` starts no "
        "scheduler or workers of its own. Its workers need this package installed and must "
        "reach the data dir and Orthanc.",
    )
    # The platform's own Dask cluster (neuronova_lib.compute), started by `up`.
    dask_enabled: bool = Field(
        default=True,
        description="Start a Dask scheduler and workers with the platform (`dask scheduler`, "
        "`dask worker`, loopback); off: upload jobs start a one-worker local cluster each. "
        "Ignored when NEURONOVA_DASK_SCHEDULER is set.",
    )
    dask_port: int = Field(default=8104, description="The platform's Dask scheduler (loopback).")
    dask_dashboard_port: int = Field(
        default=8105,
        description="The Dask dashboard (loopback); nginx serves it at /dask/ to admins and "
        "scientists.",
    )
    dask_workers: int = Field(default=2, ge=1, le=256, description="Dask worker processes.")
    dask_threads: int = Field(default=1, ge=1, le=256, description="Threads per Dask worker.")
    dask_memory_limit: str = Field(
        default="auto",
        pattern=r"^(auto|0|[0-9]+(\.[0-9]+)?\s*([kKMGT]i?B)?)$",
        description="Memory limit of each Dask worker (e.g. 4GiB; auto: the machine's memory "
        "shared by the workers; 0: none).",
    )
    job_concurrency: int = Field(
        default=4, ge=1, le=64,
        description="Upload jobs the API drives at once (their work runs on the Dask cluster).",
    )

    # MLflow tracking server (neuronova_lib.stack.services.mlflow_service), behind nginx at
    # /mlflow/ for scientists, model owners and admins.
    mlflow_enabled: bool = Field(
        default=True,
        description="Run the MLflow tracking server under the supervisor (UI and REST at "
        "/mlflow/). Off: no /mlflow/ (tests that need no MLflow start faster).",
    )
    mlflow_port: int = Field(default=8103, description="MLflow server (loopback only).")
    mlflow_backend_store_uri: str | None = Field(
        default=None,
        description="MLflow's tracking and registry database (SQLAlchemy URL, e.g. "
        "postgresql://user:pw@host/db); unset: SQLite in the data dir (mlflow/mlflow.db).",
    )
    mlflow_artifacts_destination: str | None = Field(
        default=None,
        description="Where MLflow keeps artifacts (models, images), served through the "
        "tracking server: a folder or an object store URI such as s3://bucket/prefix; "
        "unset: mlflow/artifacts in the data dir.",
    )

    # Clinician dashboards (dashboards/, neuronova_lib.dashboards): one Voilà server under the
    # supervisor, behind nginx at /dashboards/ for signed-in clinicians, model owners, admins.
    dashboards_enabled: bool = Field(
        default=True,
        description="Run the Voilà dashboards server under the supervisor (worklist and study "
        "viewer at /dashboards/). Off: /dashboards/ answers 503.",
    )
    dashboards_port: int = Field(default=8106, description="Voilà dashboards server (loopback).")
    dashboard_token_ttl: int = Field(
        default=900, ge=60, le=86_400,
        description="Seconds the access token a dashboard page's kernel reads with lives (minted "
        "for the signed-in user when the page opens, act=dashboards); sign-out ends it sooner.",
    )
    dashboard_pool_size: int = Field(
        default=1, ge=0, le=16,
        description="Kernels Voilà keeps ready per dashboard page, each with the page's imports "
        "done and waiting for a browser (about 150 MB each), so a page opens without a kernel "
        "start; 0: every page starts its own kernel when it is opened.",
    )

    # JupyterHub for data scientists (hub/jupyterhub_config.py, neuronova_lib.hub), behind
    # nginx at /hub/, /user/ and /services/; every port on loopback.
    hub_enabled: bool = Field(
        default=True,
        description="Run JupyterHub and configurable-http-proxy under the supervisor (notebooks "
        "at /hub/ for scientists, model owners and admins).",
    )
    hub_port: int = Field(
        default=8110, description="configurable-http-proxy: where nginx sends /hub/ and /user/."
    )
    hub_api_port: int = Field(default=8111, description="JupyterHub itself (its REST API).")
    hub_proxy_api_port: int = Field(
        default=8112, description="configurable-http-proxy's REST API (the hub adds routes)."
    )
    hub_service_port: int = Field(
        default=8113, description="The hub's kernel-token service (/services/neuronova-token/)."
    )
    hub_internal_url: str | None = Field(
        default=None,
        description="JupyterHub as the platform API reaches it to check a kernel's hub token "
        "(e.g. http://hub.neuronova.svc:8081 on Kubernetes); unset: the hub `up` runs, "
        "http://127.0.0.1:HUB_API_PORT.",
    )
    hub_token_ttl: int = Field(
        default=900, ge=10, le=86_400,
        description="Seconds a kernel's exchanged access token lives (RFC 8693 token exchange "
        "at POST /api/auth/token); a disabled user's kernel loses access within this time.",
    )
    hub_spawner: str = Field(
        default="jupyterhub.spawner.SimpleLocalProcessSpawner",
        description="JupyterHub spawner class; the default runs every hub user as the "
        "platform's system user, each with a home under <home>/hub/users/.",
    )

    # Inference jobs (neuronova_lib.ai.inference, POST /api/inference).
    inference_timeout: float = Field(
        default=900.0, gt=0,
        description="Seconds an inference job may take, queue included, before it fails; a "
        "killed or stuck worker cannot hold a job longer.",
    )
    inference_retries: int = Field(
        default=1, ge=0, le=5,
        description="Times Dask runs an inference task again after an unexpected error or a "
        "dead worker (the local cluster's allowed failures too).",
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
        description="SOP Class UIDs the gate accepts, as JSON; unset: common image classes, SEG "
        "and the structured reports (SR, Comprehensive 3D SR).",
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

    # MLflow and the model promotion gate (neuronova_lib.ai.registry, neuronova_lib.ai.gate).
    mlflow_tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking URI the platform's own code uses (registry, gate, "
        "inference); unset: the platform's MLflow at http://127.0.0.1:MLFLOW_PORT/mlflow.",
    )
    model_name: str = Field(
        default="brain-tumor-seg", min_length=1,
        description="Registered model the platform trains, promotes and serves by default.",
    )
    gate_min_dice_tc: float = Field(
        default=0.85, ge=0, le=1,
        description="Promotion gate: lowest held-out Dice for the tumour core (TC).",
    )
    gate_min_dice_wt: float = Field(
        default=0.85, ge=0, le=1,
        description="Promotion gate: lowest held-out Dice for the whole tumour (WT).",
    )
    gate_min_dice_et: float = Field(
        default=0.75, ge=0, le=1,
        description="Promotion gate: lowest held-out Dice for the enhancing tumour (ET).",
    )
    gate_max_hd95: float | None = Field(
        default=None, gt=0,
        description="Promotion gate: highest held-out 95% Hausdorff distance (mm) allowed in "
        "any region; unset: not checked.",
    )
    gate_tolerance: float = Field(
        default=0.02, ge=0, le=1,
        description="Promotion gate: how much lower than the current champion's a candidate's "
        "held-out Dice may be in any region.",
    )
    demo_model_steps: int = Field(
        default=1200, ge=0,
        description="`up` trains the demo model for this many steps on synthetic cases when "
        "MODEL_NAME has no approved champion, and promotes it through the gate; 0: never.",
    )
    demo_model_cases: int = Field(
        default=64, ge=1, description="Synthetic training cases of the demo model.",
    )
    demo_model_seed: int = Field(
        default=0, ge=0, description="Seed of the demo model's cases and training.",
    )

    audit_repeat_window: float = Field(
        default=60.0, ge=0,
        description="Window in which repeated refusals of one kind (service, user, client, "
        "reason, status, kind of path) beyond the burst share one audit row with a count; "
        "0: a row each.",
    )
    audit_repeat_burst: int = Field(
        default=10, ge=0,
        description="Refusals of one kind in a window written as rows of their own before "
        "the rest are counted in one row.",
    )
    audit_client_rows: int = Field(
        default=200, ge=1,
        description="Refusal rows one client may add in a window; beyond, its refusals are "
        "counted in one 'refusals_suppressed' row.",
    )

    # Patient records (neuronova_lib.patients): local cache -> FHIR R4 server -> OpenEMR.
    fhir_url: str | None = Field(
        default=None,
        description="Base URL of the FHIR R4 server the patient chain reads and writes (HAPI, "
        "Google, Azure, ...); unset: the platform's own facade (/fhir/R4, served by the API).",
    )
    fhir_token: str | None = Field(
        default=None,
        description="Bearer token sent to an external FHIR server (NEURONOVA_FHIR_URL); unset: "
        "none, or for the platform's own facade a short-lived service token it mints itself.",
    )
    fhir_timeout: float = Field(
        default=5.0, gt=0, description="Seconds the patient chain waits for the FHIR server."
    )
    fhir_page_max: int = Field(
        default=100, ge=1, le=1000, description="Largest _count the /fhir/R4 facade returns."
    )
    openemr_url: str | None = Field(
        default=None,
        description="OpenEMR's address (e.g. https://emr.example.org); its Standard REST API "
        "is read at /apis/<site>/api and tokens come from /oauth2/<site>/token. Unset: the "
        "chain has no OpenEMR step (`up` sets it to the recorded demo server).",
    )
    openemr_demo: bool = Field(
        default=True,
        description="With NEURONOVA_OPENEMR_URL unset, `up` starts a local server that answers "
        "as OpenEMR's API from recorded data (the demo patients among them), so the chain has "
        "an OpenEMR to ask; false: no OpenEMR step.",
    )
    openemr_demo_port: int = Field(
        default=8190, description="Port of the recorded OpenEMR demo server (loopback)."
    )
    openemr_site: str = Field(default="default", description="OpenEMR site (multisite name).")
    openemr_client_id: str | None = Field(
        default=None, description="OAuth2 client id registered in OpenEMR (client credentials)."
    )
    openemr_client_secret: str | None = Field(
        default=None,
        description="The client's secret (client_secret_post); unset: a signed JWT client "
        "assertion with NEURONOVA_OPENEMR_PRIVATE_KEY.",
    )
    openemr_private_key: Path | None = Field(
        default=None,
        description="PEM RSA private key whose public half is registered with the OpenEMR "
        "client (JWKS); used for the RS384 client assertion.",
    )
    openemr_scope: str = Field(
        default="api:oemr system/patient.read",
        description="Scopes asked for with the client-credentials grant.",
    )
    openemr_timeout: float = Field(
        default=5.0, gt=0, description="Seconds the patient chain waits for OpenEMR."
    )
    patient_cache_ttl: float = Field(
        default=3600.0, ge=0,
        description="Seconds a cached patient is fresh; older entries are refreshed from FHIR "
        "(and kept, marked stale, while FHIR is unavailable).",
    )
    patient_id_system: str = Field(
        default="urn:neuronova:patient-id",
        description="FHIR identifier system whose value is the DICOM Patient ID (and "
        "OpenEMR's pubpid); a hospital sets its own MRN system here.",
    )

    @model_validator(mode="after")
    def _public_url(self) -> "Settings":
        """Default to the local nginx address; a set one must be an absolute http(s) URL."""
        if not self.public_url:
            self.public_url = self.local_url
            return self
        parts = urlsplit(self.public_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"NEURONOVA_PUBLIC_URL={self.public_url!r}: give an absolute http:// or "
                "https:// URL, e.g. https://pacs.example.org/neuronova"
            )
        if parts.query or parts.fragment or "?" in self.public_url or "#" in self.public_url:
            raise ValueError(
                f"NEURONOVA_PUBLIC_URL={self.public_url!r}: no query or fragment; "
                "signed URLs append their own query"
            )
        if "@" in parts.netloc:
            raise ValueError(
                f"NEURONOVA_PUBLIC_URL={self.public_url!r}: no user name or password; "
                "it is written into every DICOMweb answer"
            )
        try:
            parts.port  # noqa: B018 (urllib checks the port when it is read)
        except ValueError as exc:
            raise ValueError(f"NEURONOVA_PUBLIC_URL={self.public_url!r}: {exc}") from None
        if not _PUBLIC_PATH.fullmatch(parts.path):
            raise ValueError(
                f"NEURONOVA_PUBLIC_URL={self.public_url!r}: the path prefix may hold letters, "
                "digits, %-escapes and - . _ ~ / : @ ! * + only"
            )
        self.public_url = self.public_url.rstrip("/")
        return self

    @field_validator("dicom_modalities")
    @classmethod
    def _modalities(cls, value: dict[str, list[str | int]]) -> dict[str, list[str | int]]:
        for name, entry in value.items():
            if (len(entry) != 3 or not isinstance(entry[0], str) or not isinstance(entry[1], str)
                    or not 0 < len(entry[0].strip()) <= 16 or not entry[1]
                    or not isinstance(entry[2], int)):
                raise ValueError(
                    f"NEURONOVA_DICOM_MODALITIES[{name!r}] must be [\"AET\", \"host\", port] "
                    f"(AE title of 1-16 characters), got {entry!r}")
        return value

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
    def frames_dir(self) -> Path:
        """The frame store (neuronova_lib.frames): a cache of Orthanc's frames, by UID."""
        return self.home / "frames"

    @property
    def quarantine_dir(self) -> Path:
        return self.home / "quarantine"

    @property
    def uid_lock_dir(self) -> Path:
        """Lock files that make "is this UID free? then store it" atomic across processes."""
        return self.run_dir / "uid-locks"

    @property
    def orthanc_storage(self) -> Path:
        return self.home / "orthanc-storage"

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'neuronova.db'}"

    @property
    def local_url(self) -> str:
        """nginx as this machine reaches it: health probes and tests, never shown to users."""
        return f"http://{self.host}:{self.port}"

    @property
    def public_dicomweb_url(self) -> str:
        """DICOMweb's root as users reach it. Signed URLs, STOW-RS RetrieveURLs and the
        URLs Orthanc writes into its answers (RetrieveURL, BulkDataURI) all start with it."""
        return f"{self.public_url}/api/pacs/dicom-web"

    @property
    def orthanc_url(self) -> str:
        return f"http://127.0.0.1:{self.orthanc_port}"

    @property
    def mlflow_dir(self) -> Path:
        return self.home / "mlflow"

    @property
    def mlflow_backend_uri(self) -> str:
        return self.mlflow_backend_store_uri or f"sqlite:///{self.mlflow_dir / 'mlflow.db'}"

    @property
    def mlflow_artifacts(self) -> str:
        return self.mlflow_artifacts_destination or str(self.mlflow_dir / "artifacts")

    @property
    def hub_dir(self) -> Path:
        """JupyterHub's database and the users' homes (the demo spawner's)."""
        return self.home / "hub"

    @property
    def hub_api_url(self) -> str:
        """JupyterHub's REST API on loopback (the API verifies kernels' hub tokens here)."""
        base = (self.hub_internal_url or f"http://127.0.0.1:{self.hub_api_port}").rstrip("/")
        return f"{base}/hub/api"

    @property
    def mlflow_url(self) -> str:
        """MLflow's tracking URI on loopback (the promotion gate; never shown to users:
        they use ``{NEURONOVA_PUBLIC_URL}/mlflow`` with a bearer token)."""
        return f"http://127.0.0.1:{self.mlflow_port}/mlflow"

    @property
    def public_origin(self) -> str:
        """``scheme://host[:port]`` of the public URL: what a browser sends as ``Origin``."""
        parts = urlsplit(self.public_url)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def secure_cookies(self) -> bool:
        """Cookies carry ``Secure`` when users reach the platform over https."""
        return self.public_url.startswith("https://")


def default(name: str) -> Any:
    """The default of setting ``name``, for classes that carry a setting without the rest.

    A Dask worker's config or the gate's limits hold a few settings' values;
    their defaults come from here, so each default is written once, in
    :class:`Settings`.
    """
    return Settings.model_fields[name].get_default(call_default_factory=True)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; tests clear the cache after changing the environment."""
    return Settings()
