"""``neuronova models``: register, list, promote and roll back models from the shell.

Promotions and rollbacks act as a named platform user (``--as USER``) whose role, read
from the platform database, must be model_owner or admin, as in the API. Each is audited
with that user and the operating-system account that ran the command.
"""

from __future__ import annotations

import argparse
import getpass
import json
import socket
import sys
from typing import Any

from ..config import get_settings


def add_parser(sub: Any) -> None:
    """Add ``models`` and its actions to the ``neuronova`` command's subparsers."""
    models = sub.add_parser(
        "models", help="model registry and promotion gate (MLflow)",
        description="Versions of registered models, and the promotion gate: only `promote` "
        "and `rollback` move the `champion` alias the platform serves.")
    actions = models.add_subparsers(dest="action", required=True)
    reg = actions.add_parser("register", help="register a training run's model as a version")
    reg.add_argument("run", metavar="RUN", help="MLflow run id (registers runs:/RUN/model)")
    reg.add_argument("--name", help="registered model (default NEURONOVA_MODEL_NAME)")
    ls = actions.add_parser("list", help="versions, aliases, held-out figures, approvals")
    ls.add_argument("name", nargs="?", metavar="NAME", help="one model (default: all)")
    ls.add_argument("--json", action="store_true", help="JSON with every field")
    pr = actions.add_parser("promote", help="make VERSION champion if it passes the gate")
    pr.add_argument("name", metavar="NAME")
    pr.add_argument("version", metavar="VERSION")
    rb = actions.add_parser("rollback", help="make the previous champion champion again")
    rb.add_argument("name", metavar="NAME")
    for p in (pr, rb):
        p.add_argument("--reason", required=True, help="why (kept with the approval)")
        p.add_argument("--as", dest="as_user", required=True, metavar="USER",
                       help="the platform user (role model_owner or admin) who decides")
    models.set_defaults(func=cmd_models)


def cli_audit(session: Any, username: str | None, role: str | None,
               path: str) -> Any:
    """An audit hook writing ``service="cli"`` rows; ``client`` names the OS account."""
    from ..db.models import AuditRecord

    client = f"{getpass.getuser()}@{socket.gethostname()}"[:64]

    def audit(decision: str, status: int, reason: str, detail: str) -> None:
        session.add(AuditRecord(service="cli", username=username, role=role, method="CLI",
                                path=path, decision=decision, status=status, reason=reason,
                                detail=detail, client=client))

    return audit


def _print_model(info: dict[str, Any]) -> None:
    served = info["served"]
    print(f"{info['name']}: served "
          + (f"version {served['version']} (approval {served['approval_id']})" if served
             else f"nothing — {info['served_error']}"))
    print(f"  {'VERSION':8s} {'ALIASES':20s} {'DICE TC':>8s} {'WT':>7s} {'ET':>7s} "
          f"{'APPROVALS':10s} RUN")
    for v in info["versions"]:
        f = v["figures"]

        def fig(key: str) -> str:
            return f"{f[key]:.4f}" if key in f else "-"
        print(f"  {v['version']:8s} {','.join(v['aliases']) or '-':20s} "
              f"{fig('heldout_dice_tc'):>8s} {fig('heldout_dice_wt'):>7s} "
              f"{fig('heldout_dice_et'):>7s} {','.join(map(str, v['approvals'])) or '-':10s} "
              f"{v['run_id'] or '-'}")
    for a in info["approvals"][:10]:
        print(f"  approval {a['id']}: {a['kind']} version {a['version']} by {a['approved_by']} "
              f"({a['role']}) at {a['approved_at']}: {a['reason']}")


def cmd_models(args: argparse.Namespace) -> int:
    from ..db.engine import session_factory
    from ..db.migrate import upgrade_database
    from ..db.users import get_user
    from . import gate, registry

    settings = get_settings()
    prog = f"neuronova models {args.action}"
    try:
        if args.action == "register":
            mv = registry.register(settings, args.run, args.name)
            print(f"registered run {args.run} as version {mv.version} of {mv.name}; "
                  f"promote it with `neuronova models promote {mv.name} {mv.version} "
                  "--reason TEXT --as USER`")
            return 0
        upgrade_database(settings.sqlalchemy_url)
        with session_factory(settings.sqlalchemy_url)() as session:
            if args.action == "list":
                names = [args.name] if args.name else registry.model_names(settings)
                infos = [registry.describe(settings, n, session) for n in names]
                if args.json:
                    print(json.dumps(infos, indent=2, default=str))
                elif not infos:
                    print(f"no registered models in MLflow at {registry.tracking_uri(settings)}")
                for info in [] if args.json else infos:
                    _print_model(info)
                return 0
            path = (f"neuronova models promote {args.name} {args.version}"
                    if args.action == "promote" else f"neuronova models rollback {args.name}")
            user = get_user(session, args.as_user)
            if user is None or not user.is_active:
                why = "no such user" if user is None else "the account is disabled"
                audit = cli_audit(session, args.as_user[:64], None, path)
                audit("deny", 403, f"model_{args.action}_refused", f"user: {why}")
                session.commit()
                print(f"{prog}: --as {args.as_user}: {why} (see `neuronova users`)",
                      file=sys.stderr)
                return 1
            actor = gate.Actor(user.username, user.role)
            audit = cli_audit(session, user.username, user.role, path)
            if args.action == "promote":
                approval = gate.promote(settings, session, args.name, args.version, actor,
                                        args.reason, audit)
            else:
                approval = gate.rollback(settings, session, args.name, actor, args.reason,
                                         audit)
            print(f"{approval.model_name} version {approval.version} is champion "
                  f"(approval {approval.id}, {approval.kind} by {approval.approved_by}); "
                  f"previous: {approval.previous_version or 'none'}")
            return 0
    except gate.GateRefused as exc:
        print(f"{prog}: refused: {exc}", file=sys.stderr)
        return 1
    except registry.RegistryError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
