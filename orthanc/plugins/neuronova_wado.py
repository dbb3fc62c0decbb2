"""Orthanc plugin (orthanc-python): WADO-RS frames and rendered images that are right for HTJ2K.

Debian's Orthanc 1.10 stores HTJ2K instances byte for byte but its DICOMweb
plugin cannot serve their frames (500 for ``transfer-syntax=*``, a wrong
label otherwise) and cannot render them (415). This plugin answers, under
``/neuronova/dicom-web/``, the resources that carry pixel data:

* ``.../instances/{sop}/frames/{list}`` — frames as stored (``transfer-syntax=*``
  or the stored syntax) with the correct label, byte for byte, also for a
  wildcard part type (``type="*/*"``: HTJ2K parts as ``image/jphc``); or explicit
  VR little endian, decoded here for HTJ2K and by Orthanc's DICOMweb plugin for
  the classic syntaxes it knows (``wado.choose_frame_media`` decides). With
  ``?reduce=k`` (as stored only), each frame cut ``k`` resolution levels down where
  its codestream allows it (``wado.reduced_frame``), else whole.
* ``/studies/{study}[/series/{series}[/instances/{sop}]]`` — retrieval, each
  ``application/dicom`` part labelled with its transfer syntax: as stored for
  ``transfer-syntax=*``, else re-written in explicit VR little endian.
* ``.../instances/{sop}/rendered``, ``.../frames/{n}/rendered`` and
  ``.../instances/{sop}/thumbnail`` — 8-bit PNG or JPEG with windowing and
  viewport, decoding HTJ2K at a reduced resolution level when that is enough.

The guard sends these requests here through nginx's internal location; every
other DICOMweb request goes to the DICOMweb plugin. Nothing here assumes the
Orthanc version: raw frames are correct on any Orthanc, and native
transcoding is asked of the DICOMweb plugin first and checked (a newer
Orthanc that knows HTJ2K answers correctly and is used as is).
"""

import io
import json
import sys
import threading
from collections import OrderedDict

import orthanc

_CONFIG = json.loads(orthanc.GetConfiguration()).get("NeuroNova", {})
for _path in reversed(_CONFIG.get("PythonPath", [])):
    if _path not in sys.path:
        sys.path.insert(0, _path)

# Import everything here, in Orthanc's main thread: its HTTP worker threads have small
# stacks, and importing these modules there overflows them (a segfault in a compiled
# module of charset_normalizer, pulled in by pydicom, was seen).
import numpy as np  # noqa: E402
import pydicom  # noqa: E402

from neuronova_lib import htj2k, rendering, uids, wado  # noqa: E402
from neuronova_lib.frames.store import FrameStore, InstanceFrames  # noqa: E402
from neuronova_lib.orthanc_python_refs import ReferenceKeeper  # noqa: E402

htj2k.register()  # pydicom decodes HTJ2K instances (retrieval re-written as native) with it

PREFIX = "/neuronova/dicom-web"
# A retrieve is answered from memory (AnswerBuffer): bound what one request may ask for.
_RETRIEVE_MAX_INSTANCES = int(_CONFIG.get("RetrieveMaxInstances", 2000))
_RETRIEVE_MAX_BYTES = int(_CONFIG.get("RetrieveMaxBytes", 512 * 1024**2))
# The frame store nginx serves from (neuronova_lib.frames); None when it is off.
_FRAMES = FrameStore(_CONFIG["FramesDir"]) if _CONFIG.get("FramesDir") else None
_UID = r"([0-9]+(?:\.[0-9]+)*)"
_INSTANCE = f"{PREFIX}/studies/{_UID}/series/{_UID}/instances/{_UID}"


class InstanceInfo:
    """What a frame answer needs to know about one instance (cached per SOP UID)."""

    def __init__(self, orthanc_id, study, series, syntax, tags):
        self.orthanc_id = orthanc_id
        self.study = study
        self.series = series
        self.syntax = syntax
        self.tags = tags
        # An instance without pixels (SR, RT Structure Set) has no frames: its
        # retrieval works, a frame or rendered request of it is a 404.
        image = "Rows" in tags and "Columns" in tags
        self.frames = int(tags.get("NumberOfFrames") or 1) if image else 0
        self.rows = int(tags.get("Rows") or 0)
        self.columns = int(tags.get("Columns") or 0)
        self.samples = int(tags.get("SamplesPerPixel") or 1)
        self.bits_allocated = int(tags.get("BitsAllocated") or 8)
        self.signed = int(tags.get("PixelRepresentation") or 0) == 1

    @property
    def label(self):
        """The transfer syntax its frames are answered with as stored (frame store label)."""
        return uids.EXPLICIT_VR_LITTLE_ENDIAN if self.syntax in uids.NATIVE_LITTLE_ENDIAN else self.syntax

    @property
    def dtype(self):
        kind = "i" if self.signed else "u"
        return np.dtype(f"<{kind}{max(1, self.bits_allocated // 8)}")

    @property
    def frame_bytes(self):
        return self.rows * self.columns * self.samples * self.dtype.itemsize


class _Cache:
    def __init__(self, size=50000):
        self._size = size
        self._items = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key, value):
        with self._lock:
            self._items[key] = value
            if len(self._items) > self._size:
                self._items.popitem(last=False)

    def drop(self, key):
        with self._lock:
            self._items.pop(key, None)


_instances = _Cache()


class _NotFound(LookupError):
    """No such instance in that series and study (HTTP 404)."""


def _get_json(uri):
    return json.loads(orthanc.RestApiGet(uri))


def _require_uids(*values):
    """The route patterns are broad; a UID is what :func:`neuronova_lib.uids.valid_uid` says."""
    for value in values:
        if value is not None and not uids.valid_uid(value):
            raise _NotFound(f"{value[:80]!r} is not a DICOM UID")


def _lookup(study, series, sop):
    """The instance's info, checked to belong to ``study`` (and ``series`` unless None)."""
    _require_uids(study, series, sop)
    info = _instances.get(sop)
    if info is None:
        try:
            oid = orthanc.LookupInstance(sop)
        except Exception:
            raise _NotFound(f"no instance {sop}") from None
        parent = _get_json(f"/instances/{oid}")["ParentSeries"]
        series_json = _get_json(f"/series/{parent}")
        study_json = _get_json(f"/studies/{series_json['ParentStudy']}")
        header = _get_json(f"/instances/{oid}/header?simplify")
        tags = _get_json(f"/instances/{oid}/tags?simplify")
        info = InstanceInfo(
            oid,
            study_json["MainDicomTags"]["StudyInstanceUID"],
            series_json["MainDicomTags"]["SeriesInstanceUID"],
            header.get("TransferSyntaxUID", uids.EXPLICIT_VR_LITTLE_ENDIAN),
            tags,
        )
        _instances.put(sop, info)
    if info.study != study or (series is not None and info.series != series):
        raise _NotFound(f"no instance {sop} in series {series} of study {study}")
    return info


def _raw_frame(info, number):
    try:
        return orthanc.RestApiGet(f"/instances/{info.orthanc_id}/frames/{number - 1}/raw")
    except Exception:
        _instances.drop(info.tags.get("SOPInstanceUID"))
        raise


def _native_frames_from_dicomweb(info, sop, numbers):
    """Ask the DICOMweb plugin for explicit VR little endian, and check what it says."""
    uri = (f"/dicom-web/studies/{info.study}/series/{info.series}/instances/{sop}"
           f"/frames/{','.join(map(str, numbers))}")
    try:
        body = orthanc.RestApiGetAfterPlugins(uri)
    except Exception:
        return None
    parts = wado.split_multipart(body)
    if parts is None or len(parts) != len(numbers):
        return None
    if any(label != uids.EXPLICIT_VR_LITTLE_ENDIAN or len(data) != info.frame_bytes
           for label, data in parts):
        return None
    return [data for _, data in parts]


def _decoded_frame(info, number, reduce=0):
    """One frame as a numpy array (rows, columns[, samples])."""
    raw = _raw_frame(info, number)
    if info.syntax in uids.NATIVE_LITTLE_ENDIAN:
        shape = (info.rows, info.columns) + ((info.samples,) if info.samples > 1 else ())
        return np.frombuffer(raw, dtype=info.dtype, count=int(np.prod(shape))).reshape(shape)
    if info.syntax in uids.HTJ2K_SYNTAXES:
        return htj2k.decode(raw, reduce=reduce)
    # Classic compressed syntaxes: pydicom decodes the whole instance.
    ds = pydicom.dcmread(io.BytesIO(orthanc.RestApiGet(f"/instances/{info.orthanc_id}/file")))
    array = ds.pixel_array
    return array[number - 1] if info.frames > 1 else array


def _send_error(output, status, message):
    # orthanc-python 4.0 takes the body as str here (bytes are refused).
    output.SendHttpStatus(status, message, len(message.encode()))


def frames(output, uri, **request):
    if request["method"] != "GET":
        output.SendMethodNotAllowed("GET")
        return
    study, series, sop, frame_list = request["groups"]
    try:
        info = _lookup(study, series, sop)
        numbers = wado.parse_frame_list(frame_list, info.frames)
        media, syntax = wado.choose_frame_media(request["headers"].get("accept"), info.syntax)
    except LookupError as exc:  # unknown instance, or frames it does not have
        _send_error(output, 404, str(exc))
        return
    except wado.NotAcceptable as exc:
        _send_error(output, 406, str(exc))
        return
    reduce = request.get("get", {}).get("reduce")  # the guard let only 1 to 5 through
    if syntax == info.syntax or (syntax in uids.NATIVE_LITTLE_ENDIAN
                                 and info.syntax in uids.NATIVE_LITTLE_ENDIAN):
        data = [_raw_frame(info, n) for n in numbers]
    else:
        data = _native_frames_from_dicomweb(info, sop, numbers)
        if data is None:
            data = [np.ascontiguousarray(_decoded_frame(info, n), dtype=info.dtype).tobytes()
                    for n in numbers]
    answer = data
    if reduce in wado.FRAME_REDUCE_LEVELS and syntax == info.syntax:
        # Each frame cut to that resolution where its codestream allows, else whole.
        answer = [wado.reduced_frame(frame, syntax, int(reduce)) or frame for frame in data]
    body, content_type = wado.multipart_frames(answer, syntax, media)
    output.AnswerBuffer(body, content_type)
    if _FRAMES is not None and media == wado.OCTET_STREAM and syntax == info.label:
        _fill(info, sop, numbers, data)


def _fill(info, sop, numbers, data):
    """A frame nginx did not find in the store is written there once served (a miss)."""
    frames = InstanceFrames(info.orthanc_id, info.study, info.series, sop, info.syntax, info.frames)
    if not _FRAMES.storable(frames):
        return
    try:
        _FRAMES.claim(frames)  # so that deleting the instance drops what is written now
        for number, frame in zip(numbers, data):
            _FRAMES.write_frame(frames, number, frame)
    except OSError as exc:  # a cache: serving never fails for it
        orthanc.LogWarning(f"NeuroNova frame store: could not write {sop}: {exc}")


def rendered(output, uri, **request):
    if request["method"] != "GET":
        output.SendMethodNotAllowed("GET")
        return
    groups = request["groups"]
    study, series, sop = groups[:3]
    frame_text = groups[3] if len(groups) > 3 and groups[3] else "1"
    thumbnail = uri.endswith("/thumbnail")
    try:
        info = _lookup(study, series, sop)
        number = wado.parse_frame_list(frame_text, info.frames)[0]
        params = rendering.RenderParams.from_query(request.get("get", {}), thumbnail=thumbnail)
        media = rendering.choose_image_type(request["headers"].get("accept"))
    except LookupError as exc:
        _send_error(output, 404, str(exc))
        return
    except ValueError as exc:
        _send_error(output, 400 if not isinstance(exc, wado.NotAcceptable) else 406, str(exc))
        return
    reduce = 0
    if info.syntax in uids.HTJ2K_SYNTAXES:
        reduce = rendering.reduce_level(info.rows, info.columns, params.viewport)
    array = _decoded_frame(info, number, reduce=reduce)
    image = rendering.render(array, info.tags, params)
    body = rendering.encode(image, media, params.quality)
    output.AnswerBuffer(body, media)


class _TooLarge(ValueError):
    """A study or series retrieve over the configured bounds (HTTP 413)."""


def _check_retrieve_size(parent, study, series):
    """Refuse before reading anything when a retrieve would exceed the bounds."""
    stats = _get_json(f"{parent}/statistics")
    count, size = int(stats.get("CountInstances", 0)), int(stats.get("DiskSize", 0))
    if count <= _RETRIEVE_MAX_INSTANCES and size <= _RETRIEVE_MAX_BYTES:
        return
    what = f"study {study}" if series is None else f"series {series}"
    hint = ("retrieve it one series at a time: GET .../studies/{study}/series/{series}"
            if series is None else
            "retrieve it one instance at a time: GET .../series/{series}/instances/{sop}")
    raise _TooLarge(
        f"{what} holds {count} instances ({size / 1024**2:.0f} MiB stored); one retrieve "
        f"returns at most {_RETRIEVE_MAX_INSTANCES} instances and "
        f"{_RETRIEVE_MAX_BYTES / 1024**2:.0f} MiB (NEURONOVA_RETRIEVE_MAX_INSTANCES, "
        f"NEURONOVA_RETRIEVE_MAX_BYTES): {hint}"
    )


def _sop_uids(study, series):
    """SOP Instance UIDs of a study or one of its series, in Orthanc's order (size checked)."""
    _require_uids(study, series)
    try:
        if series is None:
            parent = f"/studies/{orthanc.LookupStudy(study)}"
        else:
            series_id = orthanc.LookupSeries(series)
            owner = _get_json(f"/studies/{_get_json(f'/series/{series_id}')['ParentStudy']}")
            if owner["MainDicomTags"]["StudyInstanceUID"] != study:
                raise _NotFound(f"no series {series} in study {study}")
            parent = f"/series/{series_id}"
    except _NotFound:
        raise
    except Exception:
        raise _NotFound(f"no study {study}" if series is None else f"no series {series}") from None
    _check_retrieve_size(parent, study, series)
    return [item["MainDicomTags"]["SOPInstanceUID"] for item in _get_json(f"{parent}/instances")]


def _as_explicit_little_endian(data):
    """The file re-written in explicit VR little endian, pixel data decoded if compressed.

    Decoding a lossless syntax keeps the instance (PS3.5 §8.2): its SOP Instance UID
    stays (pydicom 3 would mint a new one by default).
    """
    ds = pydicom.dcmread(io.BytesIO(data))
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        ds.decompress(generate_instance_uid=False)
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def retrieve(output, uri, **request):
    """WADO-RS study, series or instance retrieval, each part labelled with its syntax."""
    if request["method"] != "GET":
        output.SendMethodNotAllowed("GET")
        return
    groups = list(request["groups"]) + [None, None]
    study, series, sop = groups[0], groups[1], groups[2]
    accept = request["headers"].get("accept")
    try:
        sops = [sop] if sop else _sop_uids(study, series)
        infos = [_lookup(study, series, uid) for uid in sops]
        chosen = [wado.choose_syntax(accept, info.syntax, "application/dicom") for info in infos]
    except LookupError as exc:
        _send_error(output, 404, str(exc))
        return
    except _TooLarge as exc:
        _send_error(output, 413, str(exc))
        return
    except wado.NotAcceptable as exc:
        _send_error(output, 406, str(exc))
        return
    parts = []
    for info, syntax in zip(infos, chosen):
        data = orthanc.RestApiGet(f"/instances/{info.orthanc_id}/file")
        if syntax != info.syntax:
            data = _as_explicit_little_endian(data)
        parts.append((data, syntax))
    body, content_type = wado.multipart_body(parts, "application/dicom")
    output.AnswerBuffer(body, content_type)


# orthanc-python 4.0 leaks every callback's arguments (about 1.5 KB per request through
# nginx): each callback gives them back (neuronova_lib/orthanc_python_refs.py).
_references = ReferenceKeeper(orthanc.RestApiGetAfterPlugins, orthanc.LogWarning)
orthanc.RegisterRestCallback(ReferenceKeeper.PROBE_ROUTE, _references.probe_callback)
orthanc.RegisterRestCallback(f"{PREFIX}/studies/{_UID}", _references.wrap(retrieve))
orthanc.RegisterRestCallback(f"{PREFIX}/studies/{_UID}/series/{_UID}", _references.wrap(retrieve))
orthanc.RegisterRestCallback(_INSTANCE, _references.wrap(retrieve))
orthanc.RegisterRestCallback(f"{_INSTANCE}/frames/([0-9,]+)", _references.wrap(frames))
orthanc.RegisterRestCallback(f"{_INSTANCE}/frames/([0-9]+)/rendered", _references.wrap(rendered))
orthanc.RegisterRestCallback(f"{_INSTANCE}/rendered", _references.wrap(rendered))
orthanc.RegisterRestCallback(f"{_INSTANCE}/thumbnail", _references.wrap(rendered))


def on_change(change_type, level, resource_id):
    """Keep the frame store in step with Orthanc: every stored instance's frames are
    written, a deleted instance is dropped, a changed series' metadata is dropped."""
    try:
        if change_type == orthanc.ChangeType.NEW_INSTANCE:
            _FRAMES.add(orthanc.RestApiGet, resource_id)
        elif change_type == orthanc.ChangeType.DELETED and level == orthanc.ResourceType.INSTANCE:
            _FRAMES.drop(resource_id)
        elif change_type == orthanc.ChangeType.STABLE_SERIES:
            series = _get_json(f"/series/{resource_id}")
            study = _get_json(f"/studies/{series['ParentStudy']}")
            _FRAMES.drop_metadata(study["MainDicomTags"]["StudyInstanceUID"],
                                  series["MainDicomTags"]["SeriesInstanceUID"])
    except Exception as exc:  # a cache: Orthanc's own work never fails for it
        orthanc.LogWarning(f"NeuroNova frame store: {change_type} {resource_id}: {exc}")


if _FRAMES is not None:
    orthanc.RegisterOnChangeCallback(on_change)
if _CONFIG.get("MemoryDebug"):  # a tracemalloc view on Orthanc's own port, never by default
    from neuronova_lib import plugin_memory  # noqa: E402

    orthanc.RegisterRestCallback(plugin_memory.ROUTE, _references.wrap(plugin_memory.callback))
orthanc.LogWarning("NeuroNova WADO plugin: HTJ2K-correct frames and rendering under " + PREFIX)
