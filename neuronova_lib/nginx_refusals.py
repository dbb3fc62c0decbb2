"""What an nginx refusal means, for its audit row.

nginx hands every error it answers itself (``error_page``) to the guard's
``/api/pacs/_refused`` with the status, its own reason (``traversal``,
``rate_limited``, ``token_concurrency``) and the upstream addresses it tried.
This turns those into the audit row's reason and detail, naming the service
that was down or slow rather than a port.
"""

from __future__ import annotations

from .config import Settings

#: Reasons by status when nginx gave none of its own.
_BY_STATUS = {
    400: "bad_request",
    404: "internal_or_unknown",
    413: "body_too_large",
    414: "uri_too_long",
    429: "rate_limited",
    494: "headers_too_large",
    502: "upstream_unavailable",
    503: "upstream_unavailable",
    504: "upstream_timeout",
}


def upstream_names(addresses: str | None, settings: Settings) -> list[str]:
    """Service names of the upstreams that failed, from nginx's ``$upstream_addr``.

    Its groups (``"127.0.0.1:8102 : 127.0.0.1:8142"``) follow the request through
    internal redirects (the guard, then Orthanc after ``X-Accel-Redirect``);
    the last group is the one that failed.
    """
    ports = {settings.orthanc_port: "orthanc", settings.proxy_port: "guard",
             settings.api_port: "api"}
    names: list[str] = []
    for item in (addresses or "").split(" : ")[-1].split(","):
        item = item.strip()
        if not item:
            continue
        port = item.rpartition(":")[2]
        name = ports.get(int(port), item) if port.isdigit() else item[:64]
        if name not in names:
            names.append(name)
    return names


def nginx_refusal(status: int, reason: str | None, upstream: str | None,
                  settings: Settings) -> tuple[str, str]:
    """``(reason, detail)`` of the audit row for one of nginx's own refusals."""
    reason = (reason or "")[:64] or _BY_STATUS.get(status, "nginx_refused")
    if reason == "token_concurrency":
        return reason, (f"more than {settings.token_concurrency} requests in flight with one "
                        "token (NEURONOVA_TOKEN_CONCURRENCY)")
    if reason == "rate_limited":
        return reason, f"over the /api/ rate ({settings.api_rate}, burst {settings.api_burst})"
    if reason == "model_alias_gate_only":
        return reason, ("only the promotion gate moves model aliases (or deletes and renames "
                        "what carries them): use `neuronova models promote` or its API")
    if status in (502, 503, 504):
        names = upstream_names(upstream, settings)
        what = "too slow" if status == 504 else "unreachable"
        return reason, f"{' and '.join(names) or 'an upstream'} {what} (answered by nginx)"
    return reason, "refused by nginx before the guard"
