"""The platform's DICOMweb transport: find studies, fetch frames, load series as volumes.

:class:`Client` wraps :class:`dicomweb_client.DICOMwebClient` (exposed as
:attr:`Client.dicomweb` for everything DICOMweb can do) on the session that
:mod:`.session` builds, and adds what the platform needs on top: signed URLs
and series → :class:`~neuronova_lib.volume.Volume` with frames fetched and
decoded concurrently. The rest lives apart, by concern, the way dicomweb-client
splits its own: records in :mod:`.results`, session and sign-in in
:mod:`.session` (:func:`connect`, :func:`connect_signed`) and :mod:`.auth`,
BraTS channel rules in :mod:`.brats`, UID arguments in :mod:`.uid_arguments`,
frame decoding in :mod:`.frames`, the cache in :mod:`.cache`.

Server errors surface as :class:`requests.HTTPError` carrying the status and
the server's reason — a 403 is an error, never an empty result.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

import numpy as np
import requests

from ..volume import (
    GeometryError,
    Volume,
    instances_json,
    one_slice,
    reduced_geometry,
    series_geometry,
    volume_from_datasets,
)
from .auth import SignedUrlAuth, http_error
from .brats import BRATS_CHANNELS, classify_brats_series, match_brats_series
from .cache import FrameCache
from .frames import (
    DEFAULT_FRAME_SYNTAX,
    EXPLICIT_VR_LITTLE_ENDIAN,
    HTJ2K_SYNTAXES,
    MAX_REDUCE,
    FrameDecodeError,
    common_pixel_format,
    decode_reduced,
    response_transfer_syntax,
    split_multipart,
)
from .results import SeriesSummary, SignedStudy, StudySummary
from .segmentation import Segmentation, seg_masks
from .session import DICOMWEB_PATH, connect, connect_signed
from .session import base_url as base_url_of
from .uid_arguments import series_uid_of, study_uid_of

logger = logging.getLogger(__name__)

_OCTETS = 'multipart/related; type="application/octet-stream"'
#: Frames request: HTJ2K as stored (decoded here), anything else as uncompressed
#: (transcoded by the server), so the client needs no JPEG/JPEG-LS codecs. Not
#: ``transfer-syntax=*``: it would bring classic compressed frames as stored, and
#: Debian's Orthanc answers 500 to it for HTJ2K instances without the platform's plugin.
FRAME_ACCEPT = ", ".join(
    [f"{_OCTETS}; transfer-syntax={uid}" for uid in HTJ2K_SYNTAXES]
    + [f"{_OCTETS}; transfer-syntax={EXPLICIT_VR_LITTLE_ENDIAN}; q=0.9"]
)
#: Fallback for a server that refuses the list above (406/415/500/501): its default, uncompressed.
FRAME_ACCEPT_PLAIN = _OCTETS
#: Default size of a batched frames answer (``frames/1,2,…``) for multi-frame instances.
BATCH_BYTES = 1 << 20


def _wildcard(text: str) -> str:
    """QIDO matching: wildcards as given, else a substring match."""
    return text if any(c in text for c in "*?") else f"*{text}*"


class _Progress:
    """tqdm.auto (a widget in notebooks, text elsewhere) when installed and wanted; else silent."""

    def __init__(self, total: int | None, description: str, enabled: bool) -> None:
        self._bar: Any = None
        if enabled and total != 0:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                return
            self._bar = tqdm(total=total, desc=description, unit="frame", leave=False)

    def update(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


# -- the client --------------------------------------------------------------------------

class Client:
    """The platform's DICOMweb for one user (bearer token) or one signed URL.

    Build it with :func:`connect` or :func:`connect_signed`.

    Parameters
    ----------
    base_url : str
        The platform, ``http://host:port`` (nginx).
    session : requests.Session
        Carries the authentication (``session.auth``); shared with :attr:`dicomweb`.
    max_workers : int
        Concurrent frame requests in :meth:`load_series`.
    cache_dir : str or Path, optional
        Keep frames (and series metadata) on disk: see :class:`~.cache.FrameCache`.
    timeout : float
        Seconds per request.

    Attributes
    ----------
    dicomweb : dicomweb_client.DICOMwebClient
        The full DICOMweb API on the same session (QIDO, WADO, rendered, bulk data).
    session : requests.Session
    cache : FrameCache or None
    """

    def __init__(
        self,
        base_url: str,
        session: requests.Session,
        *,
        max_workers: int = 8,
        cache_dir: str | Path | None = None,
        timeout: float = 30.0,
    ) -> None:
        from dicomweb_client import DICOMwebClient

        if max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, got {max_workers}")
        self.base_url = base_url_of(base_url)
        self.dicomweb_url = f"{self.base_url}{DICOMWEB_PATH}"
        self.session = session
        self.max_workers = int(max_workers)
        self.timeout = timeout
        self.cache = FrameCache(cache_dir) if cache_dir is not None else None
        self._frame_accept = FRAME_ACCEPT
        self._asks_reduced = True  # ?reduce= on frame requests (the platform's extension)
        self.dicomweb = DICOMwebClient(url=self.dicomweb_url, session=session, timeout=timeout)
        # dicomweb-client retries *any* exception 5 times with 2-16 s waits (retrying's
        # default); the session's urllib3 Retry handles 429/503 instead, so an expired
        # token or a refused connection fails at once.
        self.dicomweb.set_http_retry_params(retry=False)

    def __repr__(self) -> str:
        return f"Client({self.base_url!r}, auth={self.session.auth!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.session.close()

    @property
    def auth(self) -> Any:
        """The session's :class:`~.auth.BearerAuth` or :class:`~.auth.SignedUrlAuth`."""
        return self.session.auth

    @property
    def is_signed(self) -> bool:
        """True for a client that holds only a signed URL."""
        return isinstance(self.session.auth, SignedUrlAuth)

    @contextmanager
    def _server_errors(self, what: str) -> Iterator[None]:
        """Re-raise dicomweb-client's bare HTTPError with the server's reason (and no token)."""
        try:
            yield
        except requests.HTTPError as exc:
            if exc.response is None:
                raise
            raise http_error(exc.response, what) from None

    def _get(self, url: str, what: str, **kwargs: Any) -> requests.Response:
        response = self.session.get(url, timeout=self.timeout, **kwargs)
        if response.status_code != 200:
            raise http_error(response, what)
        return response

    # -- who and what ------------------------------------------------------------------
    def whoami(self) -> dict[str, Any]:
        """``GET /api/users/me``: the signed-in user (not available to a signed-URL client)."""
        if self.is_signed:
            raise RuntimeError("a signed-URL client has no user; whoami needs a bearer token")
        return dict(self._get(f"{self.base_url}/api/users/me", "who am I").json())

    def find_studies(
        self,
        patient_id: str | None = None,
        patient_name: str | None = None,
        description: str | None = None,
        *,
        study_uid: str | None = None,
        study_date: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[StudySummary]:
        """Studies matching every filter given (QIDO-RS ``/studies``).

        Parameters
        ----------
        patient_id : str, optional
            Exact PatientID.
        patient_name, description : str, optional
            PatientName, StudyDescription: wildcards ``*``/``?`` as given, plain
            text matches as a substring (``"glioma"`` → ``*glioma*``).
        study_uid : str, optional
        study_date : str, optional
            StudyDate, one day or a range as QIDO-RS writes it: ``20240101-20241231``,
            ``20240101-`` (from), ``-20241231`` (until).
        limit, offset : int
            Paging.

        Returns
        -------
        list of StudySummary

        Raises
        ------
        requests.HTTPError
            Any refusal (401 expired, 403 out of scope) with the server's reason.
        """
        filters: dict[str, Any] = {}
        if patient_id:
            filters["PatientID"] = patient_id
        if patient_name:
            filters["PatientName"] = _wildcard(patient_name)
        if description:
            filters["StudyDescription"] = _wildcard(description)
        if study_uid is not None:
            filters["StudyInstanceUID"] = study_uid_of(study_uid)
        if study_date:
            filters["StudyDate"] = study_date
        fields = ["StudyDescription", "ModalitiesInStudy", "NumberOfStudyRelatedSeries",
                  "NumberOfStudyRelatedInstances", "AccessionNumber"]
        with self._server_errors("study search refused"):
            found = self.dicomweb.search_for_studies(
                search_filters=filters, fields=fields, limit=limit, offset=offset)
        return [StudySummary.from_json(item) for item in found]

    def series(self, study: str | StudySummary) -> list[SeriesSummary]:
        """The series of one study (QIDO-RS), by SeriesNumber."""
        study_uid = study_uid_of(study)
        fields = ["SeriesDescription", "SeriesNumber", "Modality", "NumberOfSeriesRelatedInstances"]
        with self._server_errors("series search refused"):
            found = self.dicomweb.search_for_series(study_uid, fields=fields)
        result = [SeriesSummary.from_json(item, study_uid) for item in found]
        return sorted(result, key=lambda s: (s.number is None, s.number or 0, s.series_uid))

    def series_metadata(
        self, study: str | StudySummary, series: str | SeriesSummary, *, offline: bool = False
    ) -> list[dict[str, Any]]:
        """WADO-RS metadata of every instance of a series (one request).

        With a cache it is stored; ``offline=True`` reads it from the cache and
        sends nothing (:class:`LookupError` when it is not there).
        """
        study_uid = study_uid_of(study)
        series_uid = series_uid_of(series)
        if offline:
            cached = self.cache.get_metadata(study_uid, series_uid) if self.cache else None
            if cached is None:
                raise LookupError(
                    f"series {series_uid} is not in the cache"
                    f"{'' if self.cache else ' (this client has no cache_dir)'}; load it once online"
                )
            return cached
        with self._server_errors("series metadata refused"):
            instances = self.dicomweb.retrieve_series_metadata(study_uid, series_uid)
        if not instances:
            raise LookupError(f"series {series_uid} of study {study_uid} has no instances")
        if self.cache is not None:
            self.cache.put_metadata(study_uid, series_uid, instances)
        return instances

    # -- signed URLs -------------------------------------------------------------------
    def sign(self, study: str | StudySummary | Sequence[str], ttl: float | None = None) -> SignedStudy:
        """Mint a signed URL for one study (or up to 16), ``POST /api/pacs/sign``.

        Parameters
        ----------
        study : str, StudySummary or list of str
        ttl : float, optional
            Seconds; the server caps it (``NEURONOVA_SIGNED_URL_TTL_MAX``).

        Returns
        -------
        SignedStudy
            ``.url`` for a viewer or a colleague, ``.connect()`` for a client.
        """
        if self.is_signed:
            raise RuntimeError("a signed-URL client cannot mint signed URLs; sign in first")
        if isinstance(study, (list, tuple)):
            body: dict[str, Any] = {"studies": [study_uid_of(s) for s in study]}
        else:
            body = {"study_uid": study_uid_of(study)}
        if ttl is not None:
            body["ttl_seconds"] = max(1, int(ttl))
        response = self.session.post(f"{self.base_url}/api/pacs/sign", json=body, timeout=self.timeout)
        if response.status_code != 200:
            raise http_error(response, "signing refused")
        data = response.json()
        return SignedStudy(
            url=str(data["url"]), token=str(data["token"]), query=str(data["query"]),
            studies=tuple(data["studies"]), expires_at=float(data["expires_at"]),
            base_url=self.base_url,
        )

    @classmethod
    def from_signed_url(cls, url: str, **kwargs: Any) -> Client:
        """Same as :func:`connect_signed`."""
        return connect_signed(url, **kwargs)

    # -- patient records ---------------------------------------------------------------
    def patient(self, patient_id: str) -> dict[str, Any]:
        """The patient record for a DICOM Patient ID, ``GET /api/patients/{patient_id}``
        (clinicians and admins), read through the platform's chain: its cache, the FHIR
        server, OpenEMR.

        Returns
        -------
        dict
            ``patient`` (the FHIR R4 Patient), ``name`` (DICOM PN), ``source`` (``cache``,
            ``fhir`` or ``openemr``), ``age_seconds`` and ``stale`` (how old the answer
            is), ``asked`` and ``unavailable`` (``{source: why}`` for the sources that could
            not answer).

        Raises
        ------
        neuronova_lib.patients.PatientNotFound
            No source has it (404), or none that answered did while another could not
            (503): ``asked`` and ``unavailable`` say which.
        requests.HTTPError
            Refused: 403 for a role without access to patient records, 400 for a value
            that is not a DICOM Patient ID, 401 for an ended session.
        """
        from urllib.parse import quote

        from ..patients.errors import PatientNotFound

        if self.is_signed:
            raise RuntimeError("a signed-URL client cannot read patient records; sign in first")
        response = self.session.get(f"{self.base_url}/api/patients/{quote(patient_id, safe='')}",
                                    timeout=self.timeout)
        if response.status_code in (404, 503):
            try:
                body = response.json()
            except ValueError:
                body = None
            if isinstance(body, dict) and "asked" in body:
                raise PatientNotFound(patient_id, list(body["asked"]),
                                      dict(body.get("unavailable") or {}))
        if response.status_code != 200:
            raise http_error(response, "patient record refused")
        return dict(response.json())

    # -- AI results --------------------------------------------------------------------
    def segment(self, study: str | StudySummary, *, rerun: bool = False, wait: bool = True,
                timeout: float = 900.0, poll: float = 1.0) -> dict[str, Any]:
        """Run the platform's served (champion) model on a study, as the signed-in user.

        ``POST /api/inference``; the job runs on the platform's cluster and writes a DICOM
        SEG and an SR with the region volumes into the study. A study already analysed by
        the served model version gives that job back (``existing``) unless ``rerun``.

        Returns
        -------
        dict
            The job (``GET /api/inference/{id}``): ``state``, ``model``, ``volumes_ml``,
            ``seg`` and ``sr`` (series and SOP UIDs), ``timings``, ``not_for_clinical_use``.
            With ``wait`` (default) it is ``done``.

        Raises
        ------
        requests.HTTPError
            Refused (role, unknown study, no approved model served: the server's reason).
        RuntimeError
            The job failed (its reason), or did not end within ``timeout`` seconds.
        """
        if self.is_signed:
            raise RuntimeError("a signed-URL client cannot request inference; sign in first")
        response = self.session.post(f"{self.base_url}/api/inference", timeout=self.timeout,
                                     json={"study": study_uid_of(study), "rerun": rerun})
        if response.status_code not in (200, 202):
            raise http_error(response, "inference refused")
        job: dict[str, Any] = response.json()
        deadline = time.monotonic() + timeout
        while wait and job["state"] not in ("done", "failed"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"inference job {job['job_id']} did not end in {timeout:.0f} s "
                                   f"(state {job['state']}); ask again with "
                                   f"GET {self.base_url}{job['status_url']}")
            time.sleep(poll)
            job = self._get(f"{self.base_url}/api/inference/{job['job_id']}",
                            "inference job").json()
        if job["state"] == "failed":
            raise RuntimeError(f"inference job {job['job_id']} failed: {job.get('error')}")
        return job

    def load_segmentation(self, job: Mapping[str, Any], reference: Volume) -> Segmentation:
        """The DICOM SEG of a finished inference ``job`` (WADO-RS), on ``reference``'s grid.

        ``reference`` is the study as :meth:`load_study` gives it (its reference channel,
        T1, is the series the SEG was made on): see :func:`.segmentation.seg_masks`.
        """
        seg = job.get("seg")
        if not seg:
            raise ValueError(f"job {job.get('job_id')} has no SEG (state {job.get('state')})")
        with self._server_errors("SEG retrieval refused"):
            dataset = self.dicomweb.retrieve_instance(job["study"], seg["series_uid"],
                                                      seg["sop_uid"])
        return seg_masks(dataset, reference)

    # -- volumes -------------------------------------------------------------------------
    def _fetch_frames(
        self, study_uid: str, series_uid: str, sop_uid: str, frames: Sequence[int],
        reduce: int = 0,
    ) -> list[tuple[str, bytes]]:
        """``(transfer syntax, bytes)`` per frame, from one WADO-RS frames request; with
        ``reduce``, the platform's frames that many resolution levels down where their
        codestream allows it (``?reduce=``; a server that refuses it is not asked again)."""
        url = (f"{self.dicomweb_url}/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"
               f"/frames/{','.join(str(f) for f in frames)}")
        if reduce and self._asks_reduced:
            reduced = f"{url}?reduce={reduce}"
            response = self.session.get(reduced, timeout=self.timeout,
                                        headers={"Accept": self._frame_accept})
            if response.status_code != 400:
                return self._frame_parts(response, reduced, sop_uid, frames)
            logger.info("%s refused reduced frames (HTTP 400); asking for whole frames from "
                        "now on", self.base_url)
            self._asks_reduced = False
        response = self.session.get(url, timeout=self.timeout,
                                    headers={"Accept": self._frame_accept})
        return self._frame_parts(response, url, sop_uid, frames)

    def _frame_parts(self, response: requests.Response, url: str, sop_uid: str,
                     frames: Sequence[int]) -> list[tuple[str, bytes]]:
        """The frames of the answer to a frames request for ``url`` (asked again with a
        plain Accept when the server refuses the Accept list)."""
        if response.status_code in (406, 415, 500, 501) and self._frame_accept != FRAME_ACCEPT_PLAIN:
            logger.warning("%s refused the frame Accept list (HTTP %d); asking for its default "
                           "(uncompressed) from now on", self.base_url, response.status_code)
            self._frame_accept = FRAME_ACCEPT_PLAIN
            response = self.session.get(url, timeout=self.timeout,
                                        headers={"Accept": self._frame_accept})
        if response.status_code != 200:
            raise http_error(response, "frame request refused")
        content_type = response.headers.get("Content-Type", "")
        parts = split_multipart(content_type, response.content)
        if len(parts) != len(frames):
            raise FrameDecodeError(
                f"asked instance {sop_uid} for {len(frames)} frame(s), got {len(parts)} part(s)")
        default = response_transfer_syntax(content_type) or DEFAULT_FRAME_SYNTAX
        return [(part.transfer_syntax or default, part.content) for part in parts]

    def load_series(
        self,
        study: str | StudySummary,
        series: str | SeriesSummary,
        *,
        progress: bool = True,
        use_cache: bool = True,
        offline: bool = False,
        frames_per_request: int | None = None,
        spacing_tolerance: float = 0.01,
        transport: str = "frames",
        reduce: int = 0,
        slice_step: int = 1,
        slice_at: float | None = None,
        instances: Sequence[Mapping[str, Any]] | None = None,
    ) -> Volume:
        """One series as a :class:`~neuronova_lib.volume.Volume`.

        One WADO-RS metadata request, then the frames, ``max_workers`` requests
        at a time (one per single-frame instance; a multi-frame instance's
        frames in batches, ``frames/1,2,3``), each decoded by the table in
        :mod:`.frames` as it arrives and written straight into the volume.

        Parameters
        ----------
        study, series : str or summary
        progress : bool
            A tqdm bar (a widget in notebooks) when tqdm is installed.
        use_cache : bool
            Read and write frames in the client's cache (if it has one).
        offline : bool
            Metadata and frames from the cache only: no request at all.
        frames_per_request : int, optional
            Most frames asked of a multi-frame instance in one request. Default:
            as many uncompressed frames as fit in 1 MiB (1 to 64), so answers
            stay within nginx's proxy buffers and requests still run in parallel
            (measured: 155 frames of 240×240 in batches of 16 load 3.5× faster
            than one frame per request).
        spacing_tolerance : float
            See :func:`~neuronova_lib.volume.series_geometry`.
        transport : {"frames", "series"}
            ``"frames"``: metadata, then concurrent frame requests (the cache
            is read first). ``"series"``: one WADO-RS request for the whole
            series as stored (``application/dicom``, streamed, parsed by
            dicomweb-client), frames decoded on ``max_workers`` threads; the
            cache is written, not read. See ``benchmarks/load_series.py`` for
            which is faster where.
        reduce : int
            Resolution levels to skip in-plane (``"frames"`` transport): each halves rows
            and columns and doubles their spacing, so the volume covers the same space at
            a quarter of the voxels per level. HTJ2K frames are decoded at that level
            (the codestream's lower resolutions: a fraction of the decoding work, the
            viewer's first image); frames in other syntaxes are decoded in full and
            subsampled (every ``2**reduce``-th pixel, which is where JPEG 2000's reduced
            samples sit too). 0 (default): full resolution.
        slice_step : int
            Every ``slice_step``-th slice only (``"frames"`` transport), the slice spacing
            that many times larger: a through-plane preview that needs that many times
            fewer frame requests. 1 (default): every slice.
        slice_at : float, optional
            One slice only (``"frames"`` transport), at this fraction of the series
            along its normal (0 the first, 0.5 the middle, 1 the last): one frame request,
            a one-slice volume placed where that slice lies (a viewer's first image).
        instances : list of dict, optional
            The series' WADO-RS metadata (:meth:`series_metadata`) when already read:
            one request fewer (``"frames"`` transport). Default: read it.

        Returns
        -------
        Volume
            ``array[i, j, k]`` (columns, rows, slices sorted along the normal),
            stored values, RAS and LPS affines, source UIDs, selected metadata.

        Raises
        ------
        requests.HTTPError
            The server refused a request (status and reason in the message).
        GeometryError
            The instances do not form one regular volume.
        FrameDecodeError
            A frame does not match its label or metadata (e.g. a mislabelled HTJ2K frame).
        """
        study_uid = study_uid_of(study)
        series_uid = series_uid_of(series)
        if transport not in ("frames", "series"):
            raise ValueError(f"transport must be 'frames' or 'series', got {transport!r}")
        if not isinstance(reduce, int) or not 0 <= reduce <= MAX_REDUCE:
            raise ValueError(f"reduce must be an integer from 0 to {MAX_REDUCE}, got {reduce!r}")
        if not isinstance(slice_step, int) or slice_step < 1:
            raise ValueError(f"slice_step must be a positive integer, got {slice_step!r}")
        if slice_at is not None and not 0.0 <= slice_at <= 1.0:
            raise ValueError(f"slice_at must be a fraction from 0 to 1, got {slice_at!r}")
        if (reduce or slice_step > 1 or slice_at is not None) and transport != "frames":
            raise ValueError("reduce, slice_step and slice_at need transport='frames' (frames "
                             "are fetched and decoded one by one)")
        if offline and self.cache is None:
            raise LookupError("offline=True needs a client with cache_dir")
        if transport == "series" and not offline:
            return self._load_whole_series(study_uid, series_uid, progress=progress,
                                           use_cache=use_cache, spacing_tolerance=spacing_tolerance)
        if instances is None:
            instances = self.series_metadata(study_uid, series_uid, offline=offline)
        geometry = series_geometry(instances, spacing_tolerance=spacing_tolerance)
        fmt = common_pixel_format(instances)
        geometry = reduced_geometry(geometry, reduce, slice_step)
        if slice_at is not None:
            geometry = one_slice(geometry, round(slice_at * (len(geometry.slices) - 1)))
        stack = np.empty((len(geometry.slices), geometry.rows, geometry.columns), dtype=fmt.dtype)
        cache = self.cache if use_cache else None
        syntaxes: set[str] = set()
        syntaxes_lock = threading.Lock()

        # Group the slices into requests: one per instance, frames batched.
        by_instance: dict[str, list[tuple[int, int]]] = {}
        for k, ref in enumerate(geometry.slices):
            by_instance.setdefault(ref.sop_uid, []).append((ref.frame_number, k))
        if frames_per_request is None:
            frames_per_request = min(64, max(1, BATCH_BYTES // fmt.frame_bytes))
        batch = max(1, int(frames_per_request))
        tasks = [(sop, sorted(items)[i:i + batch])
                 for sop, items in by_instance.items() for i in range(0, len(items), batch)]

        def put(k: int, syntax: str, data: bytes) -> None:
            stack[k] = decode_reduced(data, syntax, fmt, reduce)
            with syntaxes_lock:
                syntaxes.add(syntax)

        def run(task: tuple[str, list[tuple[int, int]]]) -> int:
            sop, items = task
            missing = []
            for frame, k in items:
                cached = cache.get_frame(sop, frame) if cache is not None else None
                if cached is not None:
                    try:
                        put(k, *cached)
                        continue
                    except FrameDecodeError as exc:
                        logger.warning("discarding cached frame %s/%d: %s", sop, frame, exc)
                        cache.discard_frame(sop, frame, cached[0])  # type: ignore[union-attr]
                missing.append((frame, k))
            if missing and offline:
                raise LookupError(f"frame(s) {[f for f, _ in missing]} of {sop} are not in the cache")
            if missing:
                # Frames cut to the resolution asked are for this volume only: asked for
                # when no cache would keep them as the frame.
                fetched = self._fetch_frames(study_uid, series_uid, sop, [f for f, _ in missing],
                                             reduce=reduce if cache is None else 0)
                for (frame, k), (syntax, data) in zip(missing, fetched, strict=True):
                    put(k, syntax, data)
                    if cache is not None:
                        cache.put_frame(sop, frame, syntax, data)
            return len(items)

        bar = _Progress(len(geometry.slices), f"series {series_uid[-12:]}", progress)
        try:
            self._run_all(run, tasks, bar.update)
        finally:
            bar.close()
        volume = Volume.from_slice_stack(stack, geometry, instances, study_uid=study_uid,
                                         series_uid=series_uid, transfer_syntaxes=syntaxes)
        if reduce:
            volume.metadata["ReducedResolutionLevels"] = reduce
        if slice_step > 1:
            volume.metadata["SliceStep"] = slice_step
        if slice_at is not None:
            volume.metadata["SliceAt"] = slice_at
        return volume

    def _load_whole_series(self, study_uid: str, series_uid: str, *, progress: bool,
                           use_cache: bool, spacing_tolerance: float) -> Volume:
        """``transport="series"``: one streamed WADO-RS request, instances as stored."""
        datasets = []
        bar = _Progress(None, f"series {series_uid[-12:]}", progress)
        try:
            with self._server_errors("series retrieval refused"):
                for ds in self.dicomweb.iter_series(
                        study_uid, series_uid, media_types=(("application/dicom", "*"),)):
                    if ds.get("SeriesInstanceUID") != series_uid:
                        raise FrameDecodeError(
                            f"asked for series {series_uid}, got an instance of {ds.get('SeriesInstanceUID')}")
                    datasets.append(ds)
                    bar.update(int(ds.get("NumberOfFrames", 1) or 1))
        finally:
            bar.close()
        if not datasets:
            raise LookupError(f"series {series_uid} of study {study_uid} has no instances")
        cache = self.cache if use_cache else None
        volume = volume_from_datasets(
            datasets, spacing_tolerance=spacing_tolerance, max_workers=self.max_workers,
            on_frame=cache.put_frame if cache is not None else None)
        if cache is not None:
            cache.put_metadata(study_uid, series_uid, instances_json(datasets))
        volume.study_uid, volume.series_uid = study_uid, series_uid
        return volume

    def _run_all(self, run: Callable[[Any], int], tasks: Sequence[Any],
                 done: Callable[[int], None]) -> None:
        """``run`` every task on ``max_workers`` threads; the first error cancels the rest."""
        if self.max_workers == 1 or len(tasks) <= 1:
            for task in tasks:
                done(run(task))
            return
        with ThreadPoolExecutor(max_workers=self.max_workers, thread_name_prefix="neuronova-frames") as pool:
            pending: set[Future[int]] = {pool.submit(run, task) for task in tasks}
            try:
                while pending:
                    finished, pending = wait(pending, return_when=FIRST_EXCEPTION)
                    for future in finished:
                        done(future.result())  # raises the task's error
            except BaseException:
                for future in pending:
                    future.cancel()
                raise

    def load_study(
        self,
        study: str | StudySummary,
        *,
        series: Mapping[str, str | SeriesSummary] | None = None,
        channels: Sequence[str] = BRATS_CHANNELS,
        reference: str | None = None,
        progress: bool = True,
        **load_kwargs: Any,
    ) -> Volume:
        """The four BraTS channels of a study as one ``(4, X, Y, Z)`` volume.

        Series are matched to channels by SeriesDescription
        (:func:`classify_brats_series`), unless ``series`` maps channels to
        SeriesInstanceUIDs. Channels whose grid differs from the reference's
        (T1 by default) are resampled onto it (:meth:`Volume.resample_to`,
        trilinear; the result is then float32); identical grids are stacked
        as they are (the stored dtype, bit for bit).

        Parameters
        ----------
        study : str or StudySummary
        series : dict, optional
            Channel → SeriesInstanceUID, overriding (or completing) the matching.
        channels : sequence of str
            Order of the first axis; default ``("t1", "t1c", "t2", "flair")``.
        reference : str, optional
            The channel whose grid the others are put on (default: the first).
        progress : bool
        **load_kwargs
            Passed to :meth:`load_series`.

        Raises
        ------
        LookupError
            A channel has no series, or two series claim one.
        """
        study_uid = study_uid_of(study)
        channels = tuple(channels)
        reference = reference or channels[0]
        if reference not in channels:
            raise ValueError(f"reference {reference!r} is not one of the channels {channels}")
        chosen = {ch: series_uid_of(uid) for ch, uid in (series or {}).items()}
        if any(ch not in chosen for ch in channels):
            found = self.series(study_uid)
            matched = match_brats_series(found)
            for ch in channels:
                if ch not in chosen and ch in matched:
                    chosen[ch] = matched[ch].series_uid
            missing = [ch for ch in channels if ch not in chosen]
            if missing:
                listing = "; ".join(f"{s.description!r} ({s.series_uid})" for s in found) or "none"
                raise LookupError(
                    f"study {study_uid}: no series for channel(s) {missing}. Series found: "
                    f"{listing}. Pass series={{'channel': <SeriesInstanceUID>, ...}}"
                )
        volumes = {ch: self.load_series(study_uid, chosen[ch], progress=progress, **load_kwargs)
                   for ch in channels}
        ref = volumes[reference]
        frames_of_reference = {v.metadata.get("FrameOfReferenceUID") for v in volumes.values()}
        if len(frames_of_reference) > 1:
            logger.warning(
                "study %s: the channels have different FrameOfReferenceUIDs %s; resampling "
                "compares patient coordinates and does not register images",
                study_uid, sorted(str(f) for f in frames_of_reference))
        resampled = {ch: vol.resample_to(ref) for ch, vol in volumes.items()}
        moved = [ch for ch in channels if resampled[ch] is not volumes[ch]]
        array = np.stack([resampled[ch].array for ch in channels])
        metadata = {k: v for k, v in ref.metadata.items()
                    if k in ("PatientID", "PatientName", "PatientSex", "PatientAge",
                             "StudyDate", "StudyTime", "StudyDescription", "AccessionNumber",
                             "FrameOfReferenceUID", "Modality")}
        metadata["channels"] = {ch: volumes[ch].metadata for ch in channels}
        metadata["resampled_channels"] = moved
        return Volume(
            array=array, affine_lps=ref.affine_lps, study_uid=study_uid,
            series_uid=ref.series_uid, sop_uids=ref.sop_uids, frame_numbers=ref.frame_numbers,
            metadata=metadata, channels=channels,
            channel_series={ch: volumes[ch].series_uid for ch in channels},
        )


__all__ = [
    "BRATS_CHANNELS",
    "Client",
    "GeometryError",
    "SeriesSummary",
    "SignedStudy",
    "StudySummary",
    "classify_brats_series",
    "connect",
    "connect_signed",
    "match_brats_series",
]
