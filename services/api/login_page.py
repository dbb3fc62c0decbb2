"""The sign-in page: plain HTML, one inline style sheet, no script, no external asset.

Its ``Content-Security-Policy`` allows exactly that style sheet (by hash), forms
posting to this origin and nothing else, so an injection into the page could
load or run nothing.
"""

from __future__ import annotations

import base64
import hashlib
from html import escape

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;
background:#f3f5f8;color:#1b2430}
main{max-width:24rem;margin:10vh auto;background:#fff;padding:2rem 2.25rem;
border-radius:8px;box-shadow:0 1px 4px rgba(0,0,0,.15)}
h1{font-size:1.4rem;margin:0 0 .25rem}
p.sub{margin:0 0 1.5rem;color:#4a5563}
label{display:block;font-weight:600;margin:1rem 0 .3rem}
input[type=text],input[type=password]{width:100%;box-sizing:border-box;padding:.55rem .6rem;
font-size:1rem;border:1px solid #8a94a3;border-radius:4px}
input:focus,button:focus,a:focus{outline:3px solid #1d5fbf;outline-offset:2px}
button{margin-top:1.5rem;width:100%;padding:.65rem;font-size:1rem;font-weight:600;
color:#fff;background:#1d5fbf;border:0;border-radius:4px;cursor:pointer}
button.secondary{background:#4a5563}
.error{background:#fdecea;border:1px solid #c62828;color:#7f1d1d;padding:.6rem .75rem;
border-radius:4px;margin:0 0 1rem}
.note{background:#e8f1fb;border:1px solid #1d5fbf;padding:.6rem .75rem;border-radius:4px;
margin:0 0 1rem}
footer{margin-top:1.5rem;font-size:.85rem;color:#4a5563}
"""

_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()

#: Sent with every page of this module.
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Cache-Control": "no-store",
}


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{escape(title)} · NeuroNova</title>\n<style>{_STYLE}</style>\n</head>\n"
        f"<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    )


def sign_in_page(action: str, next_path: str, csrf: str, *, username: str = "",
                 error: str | None = None, note: str | None = None) -> str:
    """The form: username, password, the ``next`` path and the form's CSRF token."""
    alert = (f'<p class="error" role="alert" id="signin-error">{escape(error)}</p>\n'
             if error else "")
    info = f'<p class="note" role="status">{escape(note)}</p>\n' if note else ""
    described = ' aria-describedby="signin-error"' if error else ""
    body = f"""<h1>Sign in to NeuroNova</h1>
<p class="sub">Research platform for brain-tumour MRI</p>
{info}{alert}<form method="post" action="{escape(action)}">
<input type="hidden" name="next" value="{escape(next_path)}">
<input type="hidden" name="csrf" value="{escape(csrf)}">
<label for="username">Username</label>
<input type="text" id="username" name="username" value="{escape(username)}"
 autocomplete="username" autocapitalize="none" spellcheck="false" required autofocus{described}>
<label for="password">Password</label>
<input type="password" id="password" name="password" autocomplete="current-password"
 required{described}>
<button type="submit">Sign in</button>
</form>
<footer>Programs use a token from <code>POST /api/auth/token</code> instead.</footer>"""
    return _page("Sign in", body)


def signed_in_page(logout_action: str, next_path: str, csrf: str, username: str,
                   role: str) -> str:
    """For a browser that is signed in already: continue, or sign out (a CSRF-token form)."""
    body = f"""<h1>Signed in</h1>
<p class="sub">as <strong id="signed-in-user">{escape(username)}</strong>
 ({escape(role)})</p>
<p><a href="{escape(next_path)}" id="continue">Continue to {escape(next_path)}</a></p>
<form method="post" action="{escape(logout_action)}">
<input type="hidden" name="csrf" value="{escape(csrf)}">
<button type="submit" class="secondary" id="sign-out">Sign out</button>
</form>"""
    return _page("Signed in", body)


def refused_page(message: str, retry: str) -> str:
    """A refused form post (cross-site, or a stale form): what happened and where to go."""
    body = f"""<h1>Request refused</h1>
<p class="error" role="alert">{escape(message)}</p>
<p><a href="{escape(retry)}">Back to sign-in</a></p>"""
    return _page("Refused", body)
