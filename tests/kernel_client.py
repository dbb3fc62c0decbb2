"""Run code in a Jupyter kernel through a notebook server's REST API and its websocket.

What JupyterLab does when a cell runs, without a browser: ``POST /api/kernels`` starts a
kernel, ``/api/kernels/<id>/channels`` (a websocket, Jupyter's JSON message protocol v5)
carries ``execute_request`` and brings back the output. Authenticated with a hub token
(``Authorization: token …``), through nginx like any client.
"""

from __future__ import annotations

import asyncio
import json
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
