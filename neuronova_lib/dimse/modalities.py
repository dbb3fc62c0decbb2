"""Who may open an association with the listener: known modalities, each from its own host.

``NEURONOVA_DICOM_MODALITIES`` names them as ``{"NAME": ["AET", "host", port]}``
(Orthanc's ``DicomModalities`` form, so an existing list carries over). A
calling AE title is accepted only from an address its host resolves to: an AE
title is a name anyone can type, an address at least has to be routed.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

#: The AE title of the supervisor's health probe (C-ECHO from loopback only, never C-STORE).
PROBE_AET = "NEURONOVA-PROBE"


def _normal(address: str) -> str:
    """``::ffff:10.0.0.5`` and ``10.0.0.5`` are one peer."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        return str(ip.ipv4_mapped)
    return str(ip)


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(_normal(address)).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Admission:
    """The listener's answer to an association request."""

    accepted: bool
    reason: str
    modality: str | None = None  # the configured name, for the log
    may_store: bool = False


class KnownModalities:
    """The configured modalities with their hosts resolved once, at start.

    Parameters
    ----------
    modalities : mapping
        ``{"NAME": ["AET", "host", port]}`` (validated by the settings).
    resolve : callable, optional
        ``host -> addresses`` (default: :func:`socket.getaddrinfo`); a host that
        does not resolve admits nobody and is logged.
    """

    def __init__(self, modalities: Mapping[str, Sequence[str | int]],
                 resolve: object = None) -> None:
        self._by_aet: dict[str, dict[str, str]] = {}  # AET -> {address: name}
        lookup = resolve or _addresses
        for name, (aet, host, _port) in modalities.items():
            addresses = lookup(str(host))  # type: ignore[operator]
            if not addresses:
                log.error("modality %s: host %r does not resolve; it cannot store", name, host)
            entry = self._by_aet.setdefault(str(aet).strip(), {})
            for address in addresses:
                entry[_normal(address)] = name

    def admit(self, calling_aet: str, address: str) -> Admission:
        """Whether ``calling_aet`` at ``address`` may associate, and may store."""
        aet = calling_aet.strip()
        hosts = self._by_aet.get(aet)
        if hosts is not None:
            name = hosts.get(_normal(address))
            if name is not None:
                return Admission(True, "known_modality", name, may_store=True)
            return Admission(False, "aet_wrong_host")
        if aet == PROBE_AET and _is_loopback(address):
            return Admission(True, "health_probe")
        return Admission(False, "unknown_aet")


def _addresses(host: str) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except socket.gaierror:
        return []
    return sorted({str(info[4][0]) for info in infos})
