"""``neuronova frames rebuild|verify``: the frame store against Orthanc, its source."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from typing import Any

from ..config import get_settings
from ..orthanc_store import OrthancStore
from .store import FrameStore


def orthanc_get(orthanc: OrthancStore) -> Any:
    """One Orthanc REST read as the frame store asks for it (bytes of a URI)."""

    def get(uri: str) -> bytes:
        response = orthanc.session.get(f"{orthanc.base_url}{uri}", timeout=orthanc.timeout)
        response.raise_for_status()
        return response.content

    return get


def instance_ids(orthanc: OrthancStore, page: int = 1000) -> Iterator[str]:
    """Every instance Orthanc holds, ``page`` at a time."""
    since = 0
    while True:
        chunk = orthanc.get_json(f"/instances?since={since}&limit={page}")
        yield from chunk
        if len(chunk) < page:
            return
        since += page


def cmd_frames(args: argparse.Namespace) -> int:
    settings = get_settings()
    orthanc = OrthancStore.from_settings(settings)
    store, get = FrameStore(settings.frames_dir), orthanc_get(orthanc)
    if args.action == "rebuild":
        store.clear()
        instances = frames = 0
        for oid in instance_ids(orthanc):
            instances += 1
            frames += store.add(get, oid)
        report: dict[str, Any] = {"instances": instances, "frames": frames,
                                  "root": str(store.root)}
        print(json.dumps(report) if args.json else
              f"rebuilt {frames} frame(s) of {instances} instance(s) in {store.root}")
        return 0
    report = store.verify(get, instance_ids(orthanc))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for problem in report["problems"]:
            print(problem)
        print(f"checked {report['frames']} frame(s) of {report['instances']} instance(s): "
              f"{len(report['problems'])} problem(s)"
              + ("; run `neuronova frames rebuild`" if report["problems"] else ""))
    return 1 if report["problems"] else 0


def add_parser(sub: Any) -> None:
    frames = sub.add_parser(
        "frames", help="the frame store nginx serves frames from (a cache of Orthanc)",
        description="The frame store under $NEURONOVA_HOME/frames/ holds each stored frame's "
        "WADO-RS answer, written when Orthanc stores an instance. rebuild: write it all again "
        "from Orthanc. verify: compare every frame's size and SHA-256 with Orthanc (exit 1 on "
        "any difference, missing or stray entry).")
    frames.add_argument("action", choices=["rebuild", "verify"])
    frames.add_argument("--json", action="store_true", help="JSON instead of text")
    frames.set_defaults(func=cmd_frames)
