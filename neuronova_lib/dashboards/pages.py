"""What every dashboard page shares: its client (as the signed-in user), its header, and
problems said as messages a clinician can act on, never as tracebacks.

A page's kernel reads with the access token nginx had the API mint for the user when the
page opened (see :mod:`.server`). When that token or the browser session behind it has
ended (sign-out, idle timeout), the platform answers 401: the page then says so and links
to the sign-in page, which comes back to the same page.
"""

from __future__ import annotations

import html
import os
from typing import Any
from urllib.parse import quote

import requests

from ..dicomweb.auth import TokenExpiredError

#: The platform's look for the dashboards (the template sets the page around it).
STYLE = """<style>
.nn-header { display: flex; align-items: baseline; justify-content: space-between;
  background: #12355b; color: #fff; padding: 10px 18px; border-radius: 4px; margin-bottom: 12px; }
.nn-header h1 { font-size: 20px; margin: 0; font-weight: 600; color: #fff; }
.nn-header .nn-user { font-size: 14px; color: #dce6f2; }
.nn-header a { color: #fff; }
.nn-message { padding: 10px 14px; border-radius: 4px; margin: 8px 0; font-size: 15px; }
.nn-message.nn-error { background: #fdecea; border: 1px solid #f5c2c0; color: #611a15; }
.nn-message.nn-info { background: #e8f1fb; border: 1px solid #b9d3f0; color: #12355b; }
.nn-message a { font-weight: 600; }
table.nn-worklist { border-collapse: collapse; width: 100%; font-size: 14px; background: #fff; }
table.nn-worklist th { text-align: left; background: #e9eef3; padding: 8px 10px;
  border-bottom: 2px solid #c5d0db; }
table.nn-worklist td { padding: 7px 10px; border-bottom: 1px solid #e3e8ee; }
table.nn-worklist tr.nn-study:hover { background: #f1f6fc; }
table.nn-worklist a { color: #0b5cad; text-decoration: underline; font-weight: 600; }
.nn-ai { padding: 2px 8px; border-radius: 10px; font-size: 12px; }
.nn-ai-running { background: #fff4d6; color: #7a5a00; }
.nn-ai-done { background: #def3e2; color: #1d5e2c; }
.nn-ai-failed { background: #fdecea; color: #8a1c14; }
.nn-empty { color: #555; font-size: 15px; padding: 12px; }
.nn-note { color: #555; font-size: 13px; }
.nn-study-title { font-size: 15px; margin: 4px 0 8px 0; }
.nn-study-title a { color: #0b5cad; text-decoration: underline; }
</style>"""


_request_seen = False


def await_request() -> None:
    """Wait for the browser that opens this page, in a kernel Voilà started ahead of it.

    With a pool (:mod:`.kernels`), Voilà runs a page's notebook before any request, so
    the page's imports are done when a browser comes; the notebook stops here until one
    does, and Voilà then puts that request in the environment (the query string, the
    user's token header). A kernel started for a request has them already: this returns
    at once, as it does on every later call.
    """
    global _request_seen
    if _request_seen:
        return
    from voila.utils import wait_for_request

    wait_for_request()
    _request_seen = True


class SessionEnded(Exception):
    """The page's access has ended: the user signs in again."""


def page_path() -> str:
    """This page as the browser asked for it (Voilà puts the request in the kernel's
    environment as CGI variables), for the sign-in page to come back to."""
    path = os.environ.get("SCRIPT_NAME") or "/dashboards/"
    query = os.environ.get("QUERY_STRING", "")
    return f"{path}?{query}" if query else path


def query_argument(name: str) -> str:
    """One argument of this page's query string (``study.ipynb?study=UID``)."""
    from urllib.parse import parse_qs

    values = parse_qs(os.environ.get("QUERY_STRING", "")).get(name)
    return values[0] if values else ""


def signin_url() -> str:
    from .server import public_path

    return public_path(f"/login?next={quote(page_path(), safe='/')}")


def message_html(text: str, kind: str = "error", link: tuple[str, str] | None = None) -> str:
    """A message box; ``link`` is ``(url, label)`` after the text."""
    after = ""
    if link:
        after = f' <a href="{html.escape(link[0])}">{html.escape(link[1])}</a>'
    return f'<div class="nn-message nn-{kind}">{html.escape(text)}{after}</div>'


def session_ended_html() -> str:
    return message_html("Your session has ended.", link=(signin_url(), "Sign in again"))


def status_of(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def problem_html(exc: BaseException, what: str) -> str:
    """``exc`` (raised while doing ``what``) as a message: sign in again when the session or
    its token has ended, the role when it is refused, else what failed and why, briefly."""
    if isinstance(exc, (SessionEnded, TokenExpiredError)) or status_of(exc) == 401:
        return session_ended_html()
    if status_of(exc) == 403:
        return message_html(f"You may not {what}: your role does not allow it.")
    if isinstance(exc, requests.ConnectionError):
        return message_html(f"Could not {what}: the platform did not answer. Try again "
                            "in a moment.")
    status = status_of(exc)
    reason = f" (the platform answered {status})" if status else ""
    return message_html(f"Could not {what}{reason}. Try again; if it keeps failing, tell "
                        "your administrator.")


def dashboard_client() -> Any:
    """The platform client of this page's kernel, acting as the signed-in user.

    Raises :class:`SessionEnded` when the page has no token (opened without signing in,
    or straight from Voilà rather than through the platform)."""
    from ..dicomweb.session import connect

    await_request()
    try:
        return connect(max_workers=4)
    except ValueError as exc:
        raise SessionEnded(str(exc)) from None


def header_html(title: str, user: dict[str, Any] | None) -> str:
    who = ""
    if user:
        name = user.get("full_name") or user.get("username", "")
        who = (f'<span class="nn-user">{html.escape(str(name))} '
               f'({html.escape(str(user.get("role", "")))})</span>')
    return (f'{STYLE}<div class="nn-header"><h1>NeuroNova · {html.escape(title)}</h1>'
            f"{who}</div>")
