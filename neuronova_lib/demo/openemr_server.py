"""A local HTTP server that speaks OpenEMR's protocol from recorded, realistic payloads.

OpenEMR (PHP, MySQL) cannot be installed here, so the patient chain's OpenEMR client is
tested, and ``neuronova up`` demonstrates the chain, against this server. It answers as
OpenEMR 7 documents its Standard REST API and OAuth2 server:

- ``POST /oauth2/<site>/token`` with ``grant_type=client_credentials`` and either the
  client's secret (``client_secret_post`` or HTTP Basic) or a signed JWT client assertion
  (``private_key_jwt``, RS384, ``iss`` = ``sub`` = client id, ``aud`` = this URL); answers
  ``{"token_type": "Bearer", "expires_in": ..., "access_token": ..., "scope": ...}`` or
  league/oauth2-server's error body (``invalid_client``, ``unsupported_grant_type``).
- ``GET /apis/<site>/api/patient`` with OpenEMR's search fields (``fname``, ``lname``,
  ``DOB``, ``sex``, ``pubpid``, ...) and ``_limit``/``_offset`` paging; ``GET
  /apis/<site>/api/patient/<uuid>``. Answers the envelope ``{"validationErrors": [],
  "internalErrors": [], "data": ...}`` (with ``links`` when paged); an unknown uuid is 404
  with the envelope; an expired or unknown token is 401 with league's ``access_denied``.

The records come from ``openemr_recorded/patients.json`` (the demo patients first). For
tests, :attr:`RecordedOpenEMR.mode` turns the server into a bad one: ``"garbage"`` (an
HTML error page with status 200, as a misconfigured PHP site sends), ``"slow"`` (answers
after :attr:`delay` seconds) or ``"error"`` (500 with ``internalErrors``).

Run alone: ``python -m neuronova_lib.demo.openemr_server --port 8190
--client-secret-file client.json`` (``{"client_id": ..., "client_secret": ...}``).
"""

from __future__ import annotations

import argparse
import base64
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import jwt

RECORDINGS = Path(__file__).resolve().parent / "openemr_recorded" / "patients.json"
#: OpenEMR's searchable patient fields (PatientRestController) this server honours.
SEARCH_FIELDS = ("fname", "lname", "mname", "DOB", "sex", "pubpid", "city", "state",
                 "postal_code", "phone_home", "email")
_DENIED = {"error": "access_denied",
           "error_description": "The resource owner or authorization server denied the request.",
           "hint": "Access token could not be verified",
           "message": "The resource owner or authorization server denied the request."}
_BAD_CLIENT = {"error": "invalid_client", "error_description": "Client authentication failed",
               "message": "Client authentication failed"}
_GARBAGE = (b"<html><head><title>OpenEMR</title></head><body><br />\n<b>Fatal error</b>: "
            b"Uncaught Error: Call to a member function fetchRow() on bool in "
            b"/var/www/localhost/htdocs/openemr/library/sql.inc.php:301</body></html>")


def load_records(path: Path = RECORDINGS) -> list[dict[str, str]]:
    return list(json.loads(path.read_text(encoding="utf-8"))["patients"])


class RecordedOpenEMR:
    """The server's state: its records, its registered client and the tokens it issued.

    Parameters
    ----------
    client_id, client_secret
        The registered client; ``client_secret`` may be ``None`` for a JWKS-only client.
    public_key
        PEM public key of the client (for ``private_key_jwt``), or ``None``.
    token_ttl
        Seconds an access token lives (OpenEMR's default is 3600).
    site
        The multisite name in the URLs (``default``).
    """

    def __init__(self, client_id: str, client_secret: str | None = None,
                 public_key: bytes | None = None, token_ttl: float = 3600.0,
                 site: str = "default", records: list[dict[str, str]] | None = None) -> None:
        self.client_id, self.client_secret, self.public_key = client_id, client_secret, public_key
        self.token_ttl, self.site = token_ttl, site
        self.records = records if records is not None else load_records()
        self.tokens: dict[str, float] = {}
        self.mode = "normal"
        self.delay = 0.0
        self.requests: list[str] = []  # "METHOD path?query" of every request, for tests
        self.lock = threading.Lock()
        self.httpd: ThreadingHTTPServer | None = None

    # -- lifecycle -------------------------------------------------------------
    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve in a background thread; returns the base URL."""
        self.httpd = ThreadingHTTPServer((host, port), _handler(self))
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, name="openemr-recorded",
                         daemon=True).start()
        return self.url

    @property
    def url(self) -> str:
        assert self.httpd is not None
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()

    def expire_tokens(self) -> None:
        """Every token issued so far expires now (as after OpenEMR's token lifetime)."""
        with self.lock:
            self.tokens = {token: 0.0 for token in self.tokens}

    # -- OAuth2 ------------------------------------------------------------------
    def issue_token(self, form: dict[str, str], authorization: str | None,
                    token_url: str) -> tuple[int, dict[str, Any]]:
        if form.get("grant_type") != "client_credentials":
            return 400, {"error": "unsupported_grant_type",
                         "error_description": "The authorization grant type is not supported "
                                              "by the authorization server.",
                         "hint": "Check that all required parameters have been provided",
                         "message": "The authorization grant type is not supported by the "
                                    "authorization server."}
        if not self._client_ok(form, authorization, token_url):
            return 401, _BAD_CLIENT
        token = secrets.token_urlsafe(32)
        with self.lock:
            self.tokens[token] = time.time() + self.token_ttl
        return 200, {"token_type": "Bearer", "expires_in": int(self.token_ttl),
                     "access_token": token, "scope": form.get("scope", "")}

    def _client_ok(self, form: dict[str, str], authorization: str | None, token_url: str
                   ) -> bool:
        assertion = form.get("client_assertion")
        if assertion:
            if (form.get("client_assertion_type")
                    != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
                    or self.public_key is None):
                return False
            try:
                claims = jwt.decode(assertion, self.public_key, algorithms=["RS384"],
                                    audience=token_url, options={"require": ["exp", "jti"]})
            except jwt.PyJWTError:
                return False
            return bool(claims.get("iss") == claims.get("sub") == self.client_id)
        client_id, secret = form.get("client_id"), form.get("client_secret")
        if authorization and authorization.lower().startswith("basic "):
            try:
                client_id, _, secret = base64.b64decode(authorization[6:]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return False
        return (self.client_secret is not None and client_id == self.client_id
                and secret is not None and secrets.compare_digest(secret, self.client_secret))

    def token_ok(self, authorization: str | None) -> bool:
        if not authorization or not authorization.startswith("Bearer "):
            return False
        with self.lock:
            return self.tokens.get(authorization[7:], 0.0) > time.time()

    # -- the Standard API ----------------------------------------------------------
    def search(self, query: list[tuple[str, str]], path: str) -> tuple[int, dict[str, Any]]:
        params = dict(query)
        matches = [r for r in self.records
                   if all(r.get(f, "").lower() == params[f].lower()
                          for f in SEARCH_FIELDS if f in params)]
        body: dict[str, Any] = {"validationErrors": [], "internalErrors": [], "data": matches}
        if "_limit" in params or "_offset" in params:
            try:
                limit = int(params.get("_limit", "0")) or len(matches) or 1
                offset = int(params.get("_offset", "0"))
            except ValueError:
                return 400, {"validationErrors": ["_limit and _offset must be integers"],
                             "internalErrors": [], "data": []}
            body["data"] = matches[offset:offset + limit]
            rest = [(k, v) for k, v in query if k not in ("_limit", "_offset")]

            def link(at: int) -> str:
                return f"{path}?{urlencode([*rest, ('_limit', limit), ('_offset', at)])}"

            body["links"] = {"first": link(0)}
            if offset > 0:
                body["links"]["previous"] = link(max(0, offset - limit))
            if offset + limit < len(matches):
                body["links"]["next"] = link(offset + limit)
        return 200, body

    def one(self, puuid: str) -> tuple[int, dict[str, Any]]:
        for record in self.records:
            if record["uuid"] == puuid:
                return 200, {"validationErrors": [], "internalErrors": [], "data": record}
        return 404, {"validationErrors": [], "internalErrors": [], "data": []}


def _handler(state: RecordedOpenEMR) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "Apache"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib name)
            pass

        def _send(self, status: int, body: dict[str, Any] | bytes,
                  content_type: str = "application/json") -> None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _misbehave(self) -> bool:
            if state.mode == "slow":
                time.sleep(state.delay)
            elif state.mode == "garbage":
                self._send(200, _GARBAGE, "text/html; charset=utf-8")
                return True
            elif state.mode == "error":
                self._send(500, {"validationErrors": [], "internalErrors": [
                    "SQLSTATE[HY000] [2002] Connection refused"], "data": []})
                return True
            return False

        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            state.requests.append(f"POST {self.path}")
            length = int(self.headers.get("Content-Length") or 0)
            form = dict(parse_qsl(self.rfile.read(length).decode("utf-8", "replace")))
            if self._misbehave():
                return
            if self.path != f"/oauth2/{state.site}/token":
                self._send(404, {"error": "not_found"})
                return
            host = self.headers.get("Host", "")
            status, body = state.issue_token(form, self.headers.get("Authorization"),
                                             f"http://{host}/oauth2/{state.site}/token")
            self._send(status, body)

        def do_GET(self) -> None:  # noqa: N802
            state.requests.append(f"GET {self.path}")
            if self._misbehave():
                return
            parts = urlsplit(self.path)
            base = f"/apis/{state.site}/api/patient"
            if not parts.path.startswith(base):
                self._send(404, {"validationErrors": [], "internalErrors": [
                    "Route not found"], "data": []})
                return
            if not state.token_ok(self.headers.get("Authorization")):
                self._send(401, _DENIED)
                return
            rest = parts.path[len(base):].strip("/")
            if rest:
                status, body = state.one(rest)
            else:
                status, body = state.search(parse_qsl(parts.query), parts.path)
            self._send(status, body)

    return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8190)
    parser.add_argument("--client-id")
    parser.add_argument("--client-secret-file", type=Path,
                        help="a JSON file {\"client_id\": ..., \"client_secret\": ...} "
                             "(kept out of the command line)")
    parser.add_argument("--public-key", type=Path, help="PEM public key of the client")
    parser.add_argument("--records", type=Path, default=RECORDINGS,
                        help="a JSON file {\"patients\": [...]} of OpenEMR patient records")
    args = parser.parse_args(argv)
    client = json.loads(args.client_secret_file.read_text()) if args.client_secret_file else {}
    client_id = args.client_id or client.get("client_id")
    if not client_id:
        parser.error("give --client-id or --client-secret-file")
    server = RecordedOpenEMR(client_id, client.get("client_secret"),
                             args.public_key.read_bytes() if args.public_key else None,
                             records=load_records(args.records))
    server.httpd = ThreadingHTTPServer((args.host, args.port), _handler(server))
    print(f"recorded OpenEMR at {server.url}", flush=True)
    server.httpd.serve_forever()


if __name__ == "__main__":
    main()
