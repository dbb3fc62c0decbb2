"""The dashboards' Voilà server, as the supervisor starts it (``python -m
neuronova_lib.dashboards.server``).

One standalone Voilà for every clinician, on loopback behind nginx at ``/dashboards/``:
a page is ready as soon as its kernel starts (a second or two), with no per-user server
to spawn. Who the user is comes from nginx alone: its sign-in check has the API mint an
access token of the signed-in user (``X-NeuroNova-Token``, replaced by nginx on every
request), and Voilà copies that header into the kernel's environment
(``VoilaConfiguration.http_header_envs`` → ``HTTP_X_NEURONOVA_TOKEN``), where
:func:`neuronova_lib.connect` picks it up. So every read is the user's own, and audited
to them.

A Voilà kernel inherits the server's environment; the server starts with only what the
pages need (the platform's URL, the import path), never the platform's settings or
secrets. Kernels run only the notebooks in ``dashboards/``: Voilà passes the browser
nothing but widget messages (no code execution), and ``.ipynb``/``.py`` files are not
served.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..config import REPO_ROOT

#: The notebooks, and the Jupyter data folder holding the ``neuronova`` Voilà template.
DASHBOARDS_DIR = REPO_ROOT / "dashboards"
JUPYTER_DATA = DASHBOARDS_DIR / "jupyter"
TEMPLATE = "neuronova"
PREFIX = "/dashboards/"
#: The request header nginx sets, and the variable Voilà turns it into (RFC 3875 style).
TOKEN_HEADER = "X-NeuroNova-Token"
#: What of the server's environment a kernel may see (everything else is dropped).
KEEP_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER", "LOGNAME",
            "VIRTUAL_ENV", "PYTHONPATH")


#: The path prefix users see before the platform's paths (``NEURONOVA_PUBLIC_URL``'s path,
#: e.g. ``/nn`` behind another proxy); the pages put it before every link they write.
ENV_PUBLIC_PREFIX = "NEURONOVA_PUBLIC_PREFIX"


def public_path(path: str) -> str:
    """``path`` (one of the platform's, ``/…``) as the browser reaches it."""
    return os.environ.get(ENV_PUBLIC_PREFIX, "").rstrip("/") + path


def voila_argv(port: int, notebooks: Path = DASHBOARDS_DIR, public_prefix: str = "",
               pool_size: int = 1) -> list[str]:
    """Voilà's command line: loopback, under ``/dashboards/``, our template, the token
    header passed to kernels, no browser, no tracebacks shown (the pages show messages).
    Behind a public path prefix, Voilà serves ``/dashboards/`` (what nginx passes on) and
    writes the prefixed path into its pages (``base_url`` for the browser, ``server_url``
    for its own routes)."""
    prefix = public_prefix.rstrip("/")
    urls = [f"--Voila.base_url={prefix}{PREFIX}"]
    if prefix:
        urls.append(f"--Voila.server_url={PREFIX}")
    return [
        sys.executable, "-m", "voila", str(notebooks), "--no-browser",
        f"--port={port}", "--Voila.ip=127.0.0.1", "--Voila.port_retries=0",
        *urls, f"--template={TEMPLATE}", "--theme=light",
        f"--VoilaConfiguration.http_header_envs={TOKEN_HEADER}",
        "--VoilaConfiguration.show_tracebacks=False",
        # The page ends its kernel when it closes (a form POST from its `beforeunload`,
        # whose `_xsrf` field Voilà's pages cannot fill: Voilà sets no `_xsrf` cookie, and
        # nginx passes it no cookie at all). The check is off: Voilà is reached only
        # through nginx's sign-in check, whose session cookie is SameSite=Strict, so a
        # request another site makes the browser send never gets here. Without it a closed
        # page's kernel went on loading the study for minutes, taking the next page's CPU.
        "--Voila.tornado_settings=disable_check_xsrf=True",
        # A kernel no page connected to (a page
        # fetched by a program, a tab closed mid-load) goes after 5 idle minutes; a page's
        # connected kernel stays however long it idles (cull_connected is off).
        "--MappingKernelManager.cull_idle_timeout=300",
        "--MappingKernelManager.cull_interval=60",
        "--MappingKernelManager.cull_connected=False",
        # Each page's notebook runs ahead in pool_size kernels, to the point where it
        # waits for a browser (pages.await_request): a page opens without a kernel start.
        # The pool is refilled 5 s after a page takes its kernel, not Voilà's 1 s: a new
        # kernel's imports would take the CPU from the page's first image.
        *(["--preheat_kernel=True", f"--pool_size={pool_size}",
           "--VoilaConfiguration.multi_kernel_manager_class="
           "neuronova_lib.dashboards.kernels.PoolKeepingKernelManager",
           "--VoilaKernelManager.fill_delay=5"] if pool_size > 0 else []),
    ]


def voila_env(platform_url: str, state_dir: Path, environ: dict[str, str] | None = None,
              public_prefix: str = "") -> dict[str, str]:
    """The server's (and so every kernel's) environment: the platform's URL, the import
    path of this checkout, the Jupyter data folder with the template, Jupyter's own state
    in ``state_dir`` (the platform's run folder, not the user's ~/.jupyter); nothing else."""
    source = os.environ if environ is None else environ
    env = {name: source[name] for name in KEEP_ENV if name in source}
    paths = [str(REPO_ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env.update({
        "NEURONOVA_URL": platform_url,
        ENV_PUBLIC_PREFIX: public_prefix.rstrip("/"),
        "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths)),
        "JUPYTER_PATH": str(JUPYTER_DATA),
        "JUPYTER_CONFIG_DIR": str(state_dir / "config"),
        "JUPYTER_DATA_DIR": str(state_dir / "data"),
        "JUPYTER_RUNTIME_DIR": str(state_dir / "runtime"),
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
    })
    return env


def main(argv: list[str] | None = None) -> None:
    """``python -m neuronova_lib.dashboards.server PORT PLATFORM_URL STATE_DIR
    [PUBLIC_PREFIX [POOL_SIZE]]``: exec Voilà."""
    args = sys.argv[1:] if argv is None else argv
    if not 3 <= len(args) <= 5:
        raise SystemExit("usage: python -m neuronova_lib.dashboards.server PORT PLATFORM_URL "
                         "STATE_DIR [PUBLIC_PREFIX [POOL_SIZE]]")
    state = Path(args[2])
    prefix = args[3] if len(args) >= 4 else ""
    pool_size = int(args[4]) if len(args) == 5 else 1
    for sub in ("config", "data", "runtime"):
        (state / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
    command = voila_argv(int(args[0]), public_prefix=prefix, pool_size=pool_size)
    os.execve(command[0], command, voila_env(args[1], state, public_prefix=prefix))


if __name__ == "__main__":
    main()
