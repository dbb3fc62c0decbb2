"""nginx's error log, written with every token removed.

Why this exists: nginx's error log line for a request ends with the request
line, the upstream URI and the Referer as the client sent them
(``request: "GET /api/pacs/dicom-web/...?token=eyJ..."``). Viewers that cannot
send headers (OHIF, a notebook's signed URL) must put the token in the query,
and nginx writes such a line on routine events: an answer buffered to a
temporary file (warn), an upstream that is down or closes mid-answer
(error), a temporary file it cannot open (crit). No ``error_log`` level both
keeps those messages and drops the request line, and nginx cannot rewrite
its own request line (``njs``, ``lua`` and ``headers-more`` change variables
and headers, not the error log's fields).

So nginx sends its error log as syslog datagrams to a Unix socket in the data
dir's ``run/`` folder, and this small supervised process writes each line to
``logs/nginx-error.log`` after :func:`redact`. Datagrams never block nginx: if
this process is down or slow, lines are dropped, never the request. Run:
``python -m neuronova_lib.stack.nginx_log SOCKET LOGFILE``.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
from pathlib import Path

#: (pattern, replacement) applied in order: token query values (any case, also
#: percent-encoded ``=``), bearer credentials, then anything shaped like a JWT.
_REDACTIONS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?i)(token(?:=|%3d))[^&\s\"',;]*"), r"\1[redacted]"),
    (re.compile(r"(?i)(bearer(?:\s|%20|\+)+)[^\s\"',;]+"), r"\1[redacted]"),
    (re.compile(r"eyJ[A-Za-z0-9_%-]*(?:\.[A-Za-z0-9_%~!*'()=-]*){0,2}"), "[jwt redacted]"),
)
#: ``<PRI>`` and nginx's syslog tag, in front of the message nginx formats itself.
_SYSLOG_HEAD = re.compile(r"^<\d{1,3}>(?:[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d )?(?:\S+: )?")
MAX_DATAGRAM = 65536
#: Unix socket paths are limited by the kernel (sun_path, 108 bytes with the NUL).
MAX_SOCKET_PATH = 107


def redact(text: str) -> str:
    """``text`` with token values, bearer credentials and JWT-shaped strings replaced."""
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


def format_line(datagram: bytes) -> str:
    """One log file line from one nginx syslog datagram, redacted.

    nginx's message carries its own time, as in its file log.
    """
    message = _SYSLOG_HEAD.sub("", datagram.decode("utf-8", "replace").rstrip("\r\n"))
    return redact(message.replace("\n", "\\n")) + "\n"


def check_socket_path(path: Path) -> Path:
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise ValueError(
            f"nginx's log socket {path} is longer than {MAX_SOCKET_PATH} bytes (a Unix socket "
            "limit): set NEURONOVA_HOME to a shorter path"
        )
    return path


def serve(socket_path: Path, log_path: Path) -> None:
    """Receive datagrams on ``socket_path`` and append them, redacted, to ``log_path``."""
    check_socket_path(socket_path)
    socket_path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.bind(str(socket_path))
    os.chmod(socket_path, 0o600)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        while True:
            datagram = sock.recv(MAX_DATAGRAM)
            os.write(fd, format_line(datagram).encode("utf-8", "replace"))
    finally:
        os.close(fd)
        sock.close()
        socket_path.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        raise SystemExit("usage: python -m neuronova_lib.stack.nginx_log SOCKET LOGFILE")
    # SIGTERM from the supervisor: leave through the finally block (socket removed).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    serve(Path(args[0]), Path(args[1]))


if __name__ == "__main__":
    main()
