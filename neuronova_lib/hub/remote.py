"""Driving a user's notebook server from a program: sign in, start the server, run code.

What a browser and JupyterLab do, without either: the platform's sign-in form, the hub's
redirects until the server runs, a hub API token (as the hub's token page asks for it),
then ``POST /api/kernels`` and the kernel's websocket (``/api/kernels/<id>/channels``,
Jupyter's JSON message protocol v5) to run code and collect its output. Everything goes
through nginx like any client. Used by the end-to-end tests and ``benchmarks/notebook_load.py``.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import requests
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect


@dataclass
class Execution:
    stdout: str = ""
    stderr: str = ""
    error: dict[str, str] | None = None
    results: list[str] = field(default_factory=list)

    def json(self) -> dict:
        """The last line of stdout, parsed (tests print one JSON line at the end)."""
        if self.error:
            raise AssertionError(f"{self.error['ename']}: {self.error['evalue']}\n"
                                 + "\n".join(self.error.get("traceback", [])))
        return dict(json.loads(self.stdout.strip().splitlines()[-1]))


class KernelClient:
    """One kernel of a user's server (``server_url`` = ``http://host/user/NAME``)."""

    def __init__(self, server_url: str, token: str, timeout: float = 120.0) -> None:
        self.server_url = server_url.rstrip("/")
        self.headers = {"Authorization": f"token {token}"}
        self.timeout = timeout
        answer = requests.post(f"{self.server_url}/api/kernels", headers=self.headers,
                               json={"name": "python3"}, timeout=30)
        answer.raise_for_status()
        self.kernel_id = str(answer.json()["id"])
        self.session = uuid.uuid4().hex

    def execute(self, code: str) -> Execution:
        return asyncio.run(asyncio.wait_for(self._execute(code), self.timeout))

    async def _execute(self, code: str) -> Execution:
        ws_url = self.server_url.replace("http", "ws", 1) + (
            f"/api/kernels/{self.kernel_id}/channels?session_id={self.session}")
        conn = await websocket_connect(HTTPRequest(ws_url, headers=self.headers,
                                                   request_timeout=30))
        msg_id = uuid.uuid4().hex
        conn.write_message(json.dumps({
            "header": {"msg_id": msg_id, "username": "test", "session": self.session,
                       "msg_type": "execute_request", "version": "5.3",
                       "date": datetime.now(UTC).isoformat()},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": False,
                        "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
        }))
        out = Execution()
        try:
            while True:
                raw = await conn.read_message()
                if raw is None:
                    raise AssertionError("the kernel's websocket closed")
                msg = json.loads(raw)
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind, content = msg["msg_type"], msg["content"]
                if kind == "stream":
                    if content["name"] == "stdout":
                        out.stdout += content["text"]
                    else:
                        out.stderr += content["text"]
                elif kind == "error":
                    out.error = content
                elif kind == "execute_result":
                    out.results.append(content["data"].get("text/plain", ""))
                elif kind == "status" and content["execution_state"] == "idle":
                    return out
        finally:
            conn.close()

    def shutdown(self) -> None:
        requests.delete(f"{self.server_url}/api/kernels/{self.kernel_id}",
                        headers=self.headers, timeout=30)


def signed_in_hub(url: str, user: str, password: str, timeout: float = 90.0
                  ) -> requests.Session:
    """A session signed in at ``/login`` (as a browser posts the form), then at the hub,
    with the user's default server running (started by the hub's redirects)."""
    web = requests.Session()
    form = web.get(f"{url}/login", params={"next": "/hub/"}, timeout=10)
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    if form.status_code != 200 or not csrf:
        raise RuntimeError(f"no sign-in form at {url}/login ({form.status_code})")
    done = web.post(f"{url}/login", timeout=30, headers={"Origin": url},
                    data={"username": user, "password": password, "csrf": csrf.group(1),
                          "next": "/hub/"})
    done.raise_for_status()
    deadline = time.monotonic() + timeout
    while True:
        lab = web.get(f"{url}/user/{user}/lab", timeout=30)
        if lab.status_code == 200 and lab.url.endswith(f"/user/{user}/lab"):
            return web
        if time.monotonic() > deadline:
            raise RuntimeError(f"{user}'s server did not start: last page {lab.url} "
                               f"({lab.status_code})")
        time.sleep(1)


def hub_api_token(url: str, web: requests.Session, user: str, note: str = "program") -> str:
    """A hub API token of ``user``, asked for with the hub's cookie as its token page does."""
    web.get(f"{url}/hub/token", timeout=10).raise_for_status()  # sets the _xsrf cookie
    xsrf = next(c.value for c in web.cookies if c.name == "_xsrf" and c.path.startswith("/hub"))
    answer = web.post(f"{url}/hub/api/users/{user}/tokens", timeout=10,
                      headers={"X-XSRFToken": xsrf, "Referer": f"{url}/hub/token"},
                      json={"note": note, "expires_in": 3600})
    answer.raise_for_status()
    return str(answer.json()["token"])
