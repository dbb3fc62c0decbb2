"""Errors raised by the HTJ2K codec: all are ``ValueError`` so callers can catch one type."""

from __future__ import annotations


class HTJ2KError(ValueError):
    """Base class: something about an image or a codestream that the codec refuses."""


class UnsupportedImageError(HTJ2KError):
    """The frame is of a kind the encoder does not handle (dtype, shape, bits, values)."""


class CodestreamError(HTJ2KError):
    """The bytes are not a JPEG 2000 codestream this module can read or rewrite."""


class BackendUnavailableError(HTJ2KError):
    """A codec backend that was asked for by name is not installed or cannot do the task."""


class DecodeError(HTJ2KError):
    """Every backend that was tried failed to decode the codestream."""
