"""The frame store nginx serves from (see :mod:`.store`) and its access audit (:mod:`.access_audit`)."""

from .store import BOUNDARY, FrameStore, InstanceFrames, content_type, describe, frame_body, label

__all__ = ["BOUNDARY", "FrameStore", "InstanceFrames", "content_type", "describe", "frame_body",
           "label"]
