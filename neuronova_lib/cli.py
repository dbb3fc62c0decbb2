"""The ``neuronova`` command: bring the platform up and down, demo data, keys, users."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

from . import uids
from .config import Settings, get_settings

log = logging.getLogger("neuronova")


def _print_welcome(settings: Settings, credentials: dict[str, Any] | None, loaded: str,
                   model: str) -> None:
    # Generated passwords are shown on the first run only; later they are in the file.
    print("\nNeuroNova is up.\n")
    print(f"  URL:        {settings.public_url}/")
    print(f"  API docs:   {settings.public_url}/api/docs")
    print(f"  DICOMweb:   {settings.public_url}/api/pacs/dicom-web/studies")
    if settings.mlflow_enabled:
        print(f"  MLflow:     {settings.public_url}/mlflow/ (sign in as owner or scientist)")
    if settings.dicom_enabled:
        print(f"  DICOM:      C-STORE to {settings.dicom_aet} at {settings.dicom_host}:"
              f"{settings.dicom_port} ({len(settings.dicom_modalities)} known modalities)")
    if settings.dask_scheduler:
        print(f"  Dask:       {settings.dask_scheduler} (NEURONOVA_DASK_SCHEDULER)")
    elif settings.dask_enabled:
        print(f"  Dask:       {settings.dask_workers} workers; dashboard "
              f"{settings.public_url}/dask/status (admins, scientists)")
    print(f"  Logs:       {settings.log_dir}/")
    print(f"  Demo data:  {loaded}")
    print(f"  AI model:   {model}")
    print(f"  Demo users: clinician, scientist, owner, admin "
          f"(passwords in {settings.home / 'demo-users.json'})")
    if credentials and not settings.demo_password:
        print("  Demo passwords (shown once, each user its own):")
        for username, password in credentials.items():
            print(f"    {username:10s} {password}")
    print("\nSign in:")
    print(f"  browser:  {settings.public_url}/login")
    print(f"  programs: curl -s -X POST {settings.public_url}/api/auth/token "
          "-d username=clinician -d password=PASSWORD")
    print("\nCtrl-C or `neuronova down` stops everything.\n", flush=True)


def cmd_up(args: argparse.Namespace) -> int:
    from .stack.platform import ensure_demo_files, load_demo, prepare_home, publish_demo_records
    from .stack.services import platform_services
    from .stack.state import StackState
    from .stack.supervisor import StartError, StopRequested, Supervisor

    settings = get_settings()
    first_run = not (settings.home / "demo-users.json").exists()
    credentials = prepare_home(settings) if first_run else None
    if not first_run:
        prepare_home(settings)
    supervisor = Supervisor(platform_services(settings), settings.log_dir)
    # `status` and `down` in another shell find this platform through the data dir, and a
    # restarted service's new pid is recorded too.
    supervisor.on_change = lambda: StackState.of(settings, supervisor.pids()).write(settings)
    stop = {"requested": False}

    def request_stop(signum: int, _frame: Any) -> None:
        stop["requested"] = True
        supervisor.request_stop()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        supervisor.start()
    except StartError as exc:
        print(f"neuronova up: {exc}", file=sys.stderr)
        return 1
    except StopRequested:  # Ctrl-C while starting: what had started is stopped already
        print("NeuroNova stopped before it was up.")
        return 0
    StackState.of(settings, supervisor.pids()).write(settings)
    loaded = "none (--no-demo)"
    model = ("none (MLflow is off)" if not settings.mlflow_enabled else
             "none (--no-demo)" if args.no_demo else "none (--no-model)")
    try:
        cases = settings.demo_cases if args.cases is None else args.cases
        if cases and not args.no_demo:
            print(f"Loading {cases} demo studies into Orthanc…", flush=True)
            folder = ensure_demo_files(settings, cases)
            loaded = f"{cases} studies, " + load_demo(settings, folder)
            # Patients through the chain (cache → FHIR → OpenEMR), an ImagingStudy per study.
            loaded += "; " + publish_demo_records(settings)
        if settings.mlflow_enabled and not (args.no_model or args.no_demo):
            from .ai.demo_model import ensure_demo_model

            model = ensure_demo_model(settings, progress=True,
                                      should_stop=lambda: stop["requested"]).message
        _print_welcome(settings, credentials, loaded, model)
        supervisor.run_forever()
    finally:
        supervisor.stop()
        StackState.remove(settings)
    if supervisor.failed:
        print(f"neuronova up: {supervisor.failed}", file=sys.stderr)
        return 1
    print("NeuroNova stopped.")
    return 0


def _wait_gone(pid: int, seconds: float) -> bool:
    """Whether ``pid`` ends within ``seconds`` (an exited child its parent has not reaped counts)."""
    from .stack.state import process_running

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not process_running(pid):
            return True
        time.sleep(0.1)
    return False


def cmd_down(_args: argparse.Namespace) -> int:
    """Stop the platform recorded in the data dir (whatever this shell's ports say)."""
    from .stack.process_tree import descendants, stop_stragglers
    from .stack.state import StackState, state_path

    settings = get_settings()
    state = StackState.read(settings)
    if state is None:
        print(f"nothing to stop: no running platform for {settings.home} "
              f"(no {state_path(settings)})")
        return 0
    if state.supervisor_alive():
        os.kill(state.supervisor, signal.SIGTERM)
        # The supervisor stops the services in reverse order, up to 15 s each.
        if _wait_gone(state.supervisor, 90):
            print("NeuroNova stopped.")
            return 0
        print(f"the supervisor (pid {state.supervisor}) did not stop in 90 s; "
              f"`kill {state.supervisor}` it, then run `neuronova down` again", file=sys.stderr)
        return 1
    # The supervisor died without stopping its services (SIGKILL, a crash): stop them here.
    leftovers = state.live_services()
    for name, pid in reversed(list(leftovers.items())):
        family = descendants(pid)  # a hub's single-user servers, in sessions of their own
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        if not _wait_gone(pid, 15):
            os.killpg(pid, signal.SIGKILL)
        stop_stragglers(family)
        print(f"stopped {name} (pid {pid}), left running by a supervisor that is gone")
    StackState.remove(settings)
    print("NeuroNova stopped." if leftovers else
          "the platform was not running (stale state removed)")
    return 0


def cmd_status(_args: argparse.Namespace) -> int:
    """Health of the platform recorded in the data dir, probed on the ports it was started with."""
    from .stack.services import platform_services
    from .stack.state import StackState, state_path

    base = get_settings()
    state = StackState.read(base)
    if state is None:
        print(f"no running platform for {base.home} (no {state_path(base)}); "
              "start one with `neuronova up`")
        return 1
    settings = state.platform_settings(base)
    supervised = state.supervisor_alive()
    live = state.live_services()
    print(f"NeuroNova at {settings.public_url}/  data dir {settings.home}  supervisor pid "
          f"{state.supervisor}{'' if supervised else ' (gone: `neuronova down` cleans up)'}")
    healthy = supervised
    for service in platform_services(settings):
        try:
            ok = bool(service.health())
        except Exception:
            ok = False
        healthy &= ok
        pid = live.get(service.name, "-")
        print(f"{service.name:10s} {'healthy' if ok else 'DOWN':8s} pid {pid}  "
              f"log {settings.log_dir / (service.name + '.log')}")
    return 0 if healthy else 1


def cmd_keys(args: argparse.Namespace) -> int:
    from .security.keyring import KeyRing

    ring = KeyRing(get_settings().secrets_dir / "jwt-keys.json")
    if args.action == "rotate":
        print(f"new signing key {ring.rotate()}; older keys still verify until revoked")
    elif args.action == "revoke":
        if not args.kid:
            print("neuronova keys revoke: name the key id (see `neuronova keys list`)", file=sys.stderr)
            return 2
        ring.revoke(args.kid)
        print(f"key {args.kid} revoked: every token it signed is refused from now on")
    for key in ring.describe():
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(key["created"]))
        print(f"{key['kid']:20s} {key['state']:8s} created {created}")
    return 0


def cmd_tokens(args: argparse.Namespace) -> int:
    """Revoke one token by jti, or every current token of a user."""
    from datetime import UTC, datetime, timedelta

    from .db.engine import session_factory
    from .db.migrate import upgrade_database
    from .db.revocation import revoke_jti, revoke_user

    settings = get_settings()
    upgrade_database(settings.sqlalchemy_url)
    lifetime = max(settings.access_token_ttl, settings.refresh_token_ttl,
                   settings.signed_url_ttl_max)
    with session_factory(settings.sqlalchemy_url)() as session:
        if args.jti:
            revoke_jti(session, args.jti, reason="neuronova tokens revoke",
                       expires_at=datetime.now(UTC) + timedelta(seconds=lifetime))
            what = f"token {args.jti}"
        else:
            try:
                revoke_user(session, args.user)
            except LookupError as exc:
                print(f"neuronova tokens revoke: {exc} (see GET /api/users)", file=sys.stderr)
                return 1
            what = f"every token {args.user} holds now"
        session.commit()
    print(f"revoked {what}: refused by the API at once and by the guard within "
          f"{settings.revocation_bound:g} s")
    return 0


def _quarantine_resolve(store: Any, prefix: str) -> Any:
    """The entry whose sha256 starts with ``prefix`` (>= 8 hex digits), or SystemExit."""
    sha = prefix.strip().lower()
    if not (8 <= len(sha) <= 64) or any(c not in "0123456789abcdef" for c in sha):
        raise SystemExit(f"neuronova quarantine: {prefix!r} is not a sha256 or a prefix of "
                         "at least 8 hex digits (see `neuronova quarantine list`)")
    matches = [e for e in store.list() if e.sha256.startswith(sha)]
    if not matches:
        raise SystemExit(f"neuronova quarantine: no quarantined file matches {prefix!r} in "
                         f"{store.root} (deleted or purged?); see `neuronova quarantine list`")
    if len(matches) > 1:
        names = "\n  ".join(e.sha256 for e in matches)
        raise SystemExit(f"neuronova quarantine: {prefix!r} is ambiguous, it matches "
                         f"{len(matches)} files; give more digits:\n  {names}")
    return matches[0]


def _quarantine_dict(entry: Any) -> dict[str, Any]:
    from .ingest import REASONS

    return {"sha256": entry.sha256, "size": entry.size, "reason": entry.reason,
            "reason_description": REASONS.get(entry.reason), "message": entry.message,
            "first_seen": entry.first_seen.isoformat(), "last_seen": entry.last_seen.isoformat(),
            "submissions": entry.submissions, "path": str(entry.path)}


def cmd_quarantine(args: argparse.Namespace) -> int:
    """Refused files kept by the ingest gate: list, show, export, delete, purge."""
    import shutil
    from datetime import timedelta

    from .ingest import Quarantine

    settings = get_settings()
    store = Quarantine(settings)
    days = settings.quarantine_retention_days
    if args.action == "list":
        entries = store.list()
        if args.json:
            print(json.dumps({"total": len(entries), "retention_days": days,
                              "entries": [_quarantine_dict(e) for e in entries]}, indent=2))
            return 0
        print(f"{'SHA256':16s} {'SIZE':>9s} {'REASON':24s} {'ROUTE':10s} {'SENDER':16s} LAST SEEN")
        for e in entries:
            last = e.submissions[-1] if e.submissions else {}
            print(f"{e.sha256[:16]:16s} {e.size:9d} {e.reason:24s} "
                  f"{last.get('route') or '-':10s} {last.get('sender') or '-':16s} "
                  f"{e.last_seen.strftime('%Y-%m-%d %H:%M:%S')}Z")
        print(f"{len(entries)} file(s) in {store.root}; retention {days:g} days")
        return 0
    if args.action == "purge":
        older = args.older_than_days if args.older_than_days is not None else days
        removed = store.purge(timedelta(days=older))
        for sha in removed:
            print(f"removed {sha}")
        print(f"purged {len(removed)} file(s) last refused over {older:g} days ago")
        return 0
    entry = _quarantine_resolve(store, args.sha)
    if args.action == "show":
        if args.json:
            print(json.dumps(_quarantine_dict(entry), indent=2))
            return 0
        info = _quarantine_dict(entry)
        for key in ("sha256", "size", "reason", "reason_description", "message",
                    "first_seen", "last_seen", "path"):
            print(f"{key + ':':20s}{info[key] if info[key] is not None else '-'}")
        print(f"submissions ({len(entry.submissions)}):")
        for s in entry.submissions:
            print(f"  {s.get('at')}  {s.get('reason')}  route {s.get('route') or '-'}  "
                  f"sender {s.get('sender') or '-'}  {s.get('message') or ''}")
        return 0
    if args.action == "export":
        dest = Path(args.dest)
        if dest.is_dir():
            dest = dest / f"{entry.sha256}.dcm"
        if dest.exists() and not args.force:
            print(f"neuronova quarantine export: {dest} exists; pass --force to overwrite",
                  file=sys.stderr)
            return 1
        shutil.copyfile(entry.path, dest)
        print(f"exported {entry.sha256} ({entry.size} bytes) to {dest}")
        return 0
    store.delete(entry.sha256)  # delete
    print(f"deleted {entry.sha256}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Archive checks: ``uids`` finds UIDs Orthanc holds more than once (exit 1 if any)."""
    from .ingest.uid_audit import duplicate_uids, readable
    from .orthanc_store import OrthancStore

    report = duplicate_uids(OrthancStore.from_settings(get_settings()))
    print(json.dumps(report, indent=2) if args.json else readable(report))
    found = sum(len(report[k]) for k in ("instances", "series", "studies"))
    return 1 if found else 0


def cmd_users(args: argparse.Namespace) -> int:
    from .db.engine import session_factory
    from .db.migrate import upgrade_database
    from .db.users import create_user

    settings = get_settings()
    upgrade_database(settings.sqlalchemy_url)
    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else getpass.getpass()
    with session_factory(settings.sqlalchemy_url)() as session:
        create_user(session, args.username, password, args.role)
        session.commit()
    print(f"user {args.username} ({args.role}) created")
    return 0


def cmd_db(_args: argparse.Namespace) -> int:
    from .db.migrate import upgrade_database

    settings = get_settings()
    upgrade_database(settings.sqlalchemy_url)
    print(f"database at head: {settings.sqlalchemy_url}")
    return 0


def cmd_transcode(args: argparse.Namespace) -> int:
    """Bulk HTJ2K transcoding on Dask (neuronova_lib.bulk); Ctrl-C once stops cleanly."""
    import getpass
    import threading

    from .bulk import BulkSetupError, ManifestBusyError, SourceError, transcode_sources

    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        # Dask logs every worker start and stop at INFO; it reads this when imported, and
        # the worker processes it spawns inherit it.
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    stop = threading.Event()

    def request_stop(_signum: int, _frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print("\nstopping: finishing the batches in flight (Ctrl-C again to abort now)",
              file=sys.stderr, flush=True)

    from .compute import scheduler_for_run
    from .config import get_settings

    # --workers asks for a LocalCluster of that size; otherwise the platform's cluster if any.
    from .stack.state import StackState

    base = get_settings()
    state = StackState.read(base)  # a running platform: the ports `up` used, not this shell's
    platform = state.platform_settings(base) if state is not None else base
    scheduler = (scheduler_for_run(platform, args.scheduler)
                 if args.scheduler or not args.workers else None)
    previous = signal.signal(signal.SIGINT, request_stop)
    try:
        summary = transcode_sources(
            args.sources, scheduler=scheduler, workers=args.workers,
            batch_size=args.batch, report_path=args.report, backup_dir=args.backup_dir,
            worker_orthanc_url=args.orthanc_url, route="transcode", sender=getpass.getuser(),
            dry_run=args.dry_run, progress=not args.quiet, stop=stop, syntax=args.syntax,
        )
    except (SourceError, BulkSetupError, ManifestBusyError) as exc:
        print(f"neuronova transcode: {exc}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGINT, previous)
    print(summary.line())
    return summary.exit_code


def cmd_config(args: argparse.Namespace) -> int:
    """Every NEURONOVA_* variable: the Markdown page, or the values this shell would use."""
    from .config_markdown import configuration_markdown, variable_name

    if args.markdown:
        sys.stdout.write(configuration_markdown())
        return 0
    for name, value in get_settings().model_dump(mode="json").items():
        if any(word in name for word in ("password", "secret", "token")) and value is not None:
            value = "(set)"
        elif isinstance(value, str):  # a database URL's password stays off the screen
            value = re.sub(r"(://[^:/@]+:)[^@]+@", r"\1***@", value)
        print(f"{variable_name(name)}={'' if value is None else json.dumps(value)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neuronova", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="verbose logs")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start the whole platform on loopback (foreground)")
    up.add_argument("--cases", type=int, default=None, help="demo studies to load")
    up.add_argument("--no-demo", action="store_true",
                    help="load no demo data and train no demo model")
    up.add_argument("--no-model", action="store_true",
                    help="train no demo model when none is served (see DEMO_MODEL_STEPS)")
    up.set_defaults(func=cmd_up)
    sub.add_parser("down", help="stop a platform started by `up`").set_defaults(func=cmd_down)
    sub.add_parser("status", help="health of every service").set_defaults(func=cmd_status)

    demo = sub.add_parser("demo-data", help="write synthetic brain-MRI studies as DICOM",
                          add_help=False)
    demo.set_defaults(func=None)
    train = sub.add_parser("train", help="train the tumour segmentation model, log it to MLflow",
                           add_help=False)
    train.set_defaults(func=None)

    keys = sub.add_parser("keys", help="list, rotate or revoke token signing keys")
    keys.add_argument("action", choices=["list", "rotate", "revoke"])
    keys.add_argument("kid", nargs="?")
    keys.set_defaults(func=cmd_keys)

    tokens = sub.add_parser("tokens", help="revoke tokens before they expire",
                            description="Revoke one token (its jti is the audit log's "
                            "token_id) or every token a user holds now.")
    tokens.add_argument("action", choices=["revoke"])
    which = tokens.add_mutually_exclusive_group(required=True)
    which.add_argument("--jti", help="one token (access, refresh or signed URL)")
    which.add_argument("--user", metavar="USERNAME", help="every current token of this user")
    tokens.set_defaults(func=cmd_tokens)

    users = sub.add_parser("users", help="create a platform user")
    users.add_argument("username")
    users.add_argument("--role", required=True,
                       choices=["clinician", "scientist", "model_owner", "admin"])
    users.add_argument("--password-stdin", action="store_true")
    users.set_defaults(func=cmd_users)

    tc = sub.add_parser(
        "transcode", help="transcode DICOM to HTJ2K lossless on Dask and store it in Orthanc",
        description="SOURCE: a folder (recursive), a file, @LIST (one path a line), "
        "orthanc:StudyInstanceUID[,...] or orthanc:all (replaced in place). Resumable: "
        "a re-run skips what is done. Exit 0 all good, 1 some failed, 2 usage, 130 stopped.")
    tc.add_argument("sources", nargs="+", metavar="SOURCE")
    tc.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                    help="an existing Dask scheduler (default: NEURONOVA_DASK_SCHEDULER, else "
                    "the platform's own cluster when it runs, else a LocalCluster)")
    tc.add_argument("--workers", type=int, metavar="N",
                    help="a LocalCluster of N worker processes (default: one per core)")
    tc.add_argument("--batch", type=int, default=32, metavar="N", help="instances per task")
    tc.add_argument("--report", type=Path, metavar="PATH",
                    help="JSON report (default: $NEURONOVA_HOME/bulk/reports/RUN.json)")
    tc.add_argument("--backup-dir", type=Path, metavar="DIR",
                    help="originals during in-place replacement; shared by all workers")
    tc.add_argument("--orthanc-url", metavar="URL",
                    help="Orthanc as the workers reach it (remote clusters)")
    tc.add_argument("--syntax", default=uids.HTJ2K_LOSSLESS,
                    choices=(uids.HTJ2K_LOSSLESS, uids.HTJ2K_LOSSLESS_RPCL),
                    help="HTJ2K lossless (default), or HTJ2K lossless RPCL: a tile-part per "
                    "resolution, so that viewers can be sent reduced frames (?reduce=)")
    tc.add_argument("--dry-run", action="store_true", help="list and count only; change nothing")
    tc.add_argument("--quiet", action="store_true", help="no progress bar")
    tc.set_defaults(func=cmd_transcode)

    db = sub.add_parser("db", help="migrate the platform database to the newest schema")
    db.add_argument("action", choices=["upgrade"])
    db.set_defaults(func=cmd_db)

    qr = sub.add_parser("quarantine", help="refused files kept by the ingest gate",
                        description="Files the ingest gate refused, kept under "
                        "$NEURONOVA_HOME/quarantine/. SHA: a sha256 or a unique prefix "
                        "(8 hex digits or more).")
    qr_sub = qr.add_subparsers(dest="action", required=True)
    qr_list = qr_sub.add_parser("list", help="every entry, most recently refused first")
    qr_list.add_argument("--json", action="store_true", help="JSON with every field")
    qr_show = qr_sub.add_parser("show", help="one entry's reasons, senders, routes, times")
    qr_show.add_argument("sha", metavar="SHA")
    qr_show.add_argument("--json", action="store_true")
    qr_export = qr_sub.add_parser("export", help="copy the refused bytes out")
    qr_export.add_argument("sha", metavar="SHA")
    qr_export.add_argument("dest", metavar="DEST", help="a file, or a folder (gets SHA.dcm)")
    qr_export.add_argument("--force", action="store_true", help="overwrite DEST")
    qr_sub.add_parser("delete", help="remove one entry").add_argument("sha", metavar="SHA")
    qr_purge = qr_sub.add_parser("purge", help="remove entries older than the retention")
    qr_purge.add_argument("--older-than-days", type=float, metavar="N",
                          help="instead of NEURONOVA_QUARANTINE_RETENTION_DAYS")
    qr.set_defaults(func=cmd_quarantine)

    cfg = sub.add_parser("config", help="the settings in effect, or their Markdown reference",
                         description="Without options: each NEURONOVA_* variable with the "
                         "value this environment gives it. --markdown: the page "
                         "docs/configuration.md (every variable, default and meaning).")
    cfg.add_argument("--markdown", action="store_true",
                     help="print docs/configuration.md, generated from the settings object")
    cfg.set_defaults(func=cmd_config)
    ck = sub.add_parser("check", help="check the archive (Orthanc) for problems to repair")
    ck.add_argument("what", choices=["uids"],
                    help="uids: SOP/Series/Study Instance UIDs held more than once")
    ck.add_argument("--json", action="store_true", help="JSON instead of text")
    ck.set_defaults(func=cmd_check)
    from .ai.models_cli import add_parser as add_models_parser
    from .frames.cli import add_parser as add_frames_parser

    add_frames_parser(sub)

    add_models_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not debug:
        # Dask's scheduler and nannies narrate every start and stop at INFO, and
        # distributed sets its loggers up from its config when imported (workers too):
        # the environment variable reaches every process.
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
        for noisy in ("distributed", "bokeh", "tornado", "alembic"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    rest = [a for a in argv if a != "--debug"]
    if rest[:1] == ["demo-data"]:
        from .demo.cli import main as demo_main

        return demo_main(rest[1:])
    if rest[:1] == ["train"]:
        from .ai.cli import main as train_main

        return train_main(rest[1:])
    args = build_parser().parse_args(rest)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
