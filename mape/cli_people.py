"""The ``mape decisions``, ``mape policy mode`` and ``mape users`` commands: what people do on the dashboard, headless.

``mape decisions list|show|approve|reject`` reads decisions and answers those
awaiting approval with the same role checks and audit events as the
dashboard (:mod:`mape.access`); ``mape policy mode`` sets or clears a
policy's mode override as the Policies page does (:mod:`mape.access.modes`);
``mape users add|list|remove`` keeps the users file. Registered on the main app by :mod:`mape.cli`, whose helpers it
uses (imported inside the commands: :mod:`mape.cli` imports this module).
"""

from __future__ import annotations

import csv
import getpass
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from mape.cli_options import ConfigOption, UserOption
from mape.cli_options import LocalActorOption as ActorOption

decisions_app = typer.Typer(help="Decisions: list, explain, and approve or reject those awaiting a person.",
                            no_args_is_help=True)
users_app = typer.Typer(help="The users file (access.users_file): names, roles, password hashes.",
                        no_args_is_help=True)


def identity_of(settings, user: str | None, actor: str | None):  # type: ignore[no-untyped-def]
    """Who runs the command (:func:`mape.access.signin.cli_identity`); a failed sign-in exits with status 3."""
    from mape.access.signin import cli_identity
    from mape.cli import _fail
    from mape.errors import MapeError

    try:
        return cli_identity(settings.access.users_file, user=user, actor=actor)
    except MapeError as exc:
        _fail(str(exc), code=3)


_FIELDS = ["id", "created_at", "model", "policy", "action", "status", "reason", "expires_at", "decided_by",
           "decided_at", "comment"]


def _row(decision, model_names: dict[int, str]) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    def moment(value: datetime | None) -> str | None:
        return None if value is None else value.replace(tzinfo=value.tzinfo or timezone.utc).isoformat()

    return {"id": decision.id, "created_at": moment(decision.created_at), "model": model_names.get(decision.model_id,
            str(decision.model_id)), "policy": decision.policy_name, "action": decision.action,
            "status": decision.status, "reason": decision.reason, "expires_at": moment(decision.expires_at),
            "decided_by": decision.decided_by, "decided_at": moment(decision.decided_at), "comment": decision.comment}


@decisions_app.command("list")
def decisions_list(
    status: Annotated[Optional[str], typer.Option(help="Only this status, e.g. awaiting_approval.")] = None,
    model: Annotated[Optional[str], typer.Option(help="Only this managed model.")] = None,
    policy: Annotated[Optional[str], typer.Option(help="Only this policy.")] = None,
    action: Annotated[Optional[str], typer.Option(help="Only this action type.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 50,
    output: Annotated[str, typer.Option("--format", help="table, json or csv.")] = "table",
    config: ConfigOption = None,
) -> None:
    """Decisions, newest first, filtered by status, model, policy and action."""
    from sqlmodel import col, select

    from knowledge import queries
    from knowledge.tables import Decision, DecisionStatus
    from mape.cli import _fail, _knowledge_session, _settings

    if status is not None and status not in {s.value for s in DecisionStatus}:
        _fail(f"--status must be one of {', '.join(s.value for s in DecisionStatus)} (got {status!r})")
    if output not in ("table", "json", "csv"):
        _fail(f"--format must be table, json or csv (got {output!r})")
    with _knowledge_session(_settings(config)) as session:
        names = {m.id: m.name for m in queries.models_by_name(session).values()}
        query = select(Decision)
        if model is not None:
            ids = [i for i, n in names.items() if n == model]
            if not ids:
                _fail(f"no managed model named {model!r} in the knowledge base")
            query = query.where(Decision.model_id == ids[0])
        for column, value in ((Decision.status, status), (Decision.policy_name, policy), (Decision.action, action)):
            if value is not None:
                query = query.where(column == value)
        rows = [_row(d, names) for d in session.exec(query.order_by(col(Decision.id).desc()).limit(limit))]
    if output == "json":
        typer.echo(json.dumps(rows, indent=2))
    elif output == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    else:
        if not rows:
            typer.echo("no decisions match")
        for r in rows:
            waits = f", expires {r['expires_at']}" if r["status"] == "awaiting_approval" and r["expires_at"] else ""
            answered = f", by {r['decided_by']}" if r["decided_by"] else ""
            typer.echo(f"{r['id']:>6}  {r['created_at']}  {r['model']}  {r['policy']} -> {r['action']}  "
                       f"{r['status']}{waits}{answered}  {r['reason']}")


@decisions_app.command("show")
def decisions_show(
    decision_id: Annotated[int, typer.Argument(help="The decision's id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    config: ConfigOption = None,
) -> None:
    """One decision: why it was taken or held back, its evidence, who answered it, and its action run."""
    from mape.cli import policy_explain

    policy_explain(decision_id, config=config, as_json=as_json)


def _answer(verb: str, decision_id: int, comment: str, user: str | None, actor: str | None,
            config: Path | None) -> None:
    from mape.access import approvals
    from mape.cli import _fail, _knowledge_session, _settings
    from mape.errors import MapeError

    settings = _settings(config)
    identity = identity_of(settings, user, actor)
    answer = approvals.approve if verb == "approve" else approvals.reject
    try:
        with _knowledge_session(settings) as session:
            decision = answer(session, decision_id, identity, at=datetime.now(timezone.utc), comment=comment)
            text = str(decision)
    except MapeError as exc:
        _fail(str(exc), code=3 if isinstance(exc, PermissionError) else 2)
    then = "the next tick dispatches it" if verb == "approve" else "it is closed"
    typer.echo(f"{text}: {verb.rstrip('e')}ed by {identity.name} ({identity.role.value}); {then}")


@decisions_app.command("approve")
def decisions_approve(
    decision_id: Annotated[int, typer.Argument(help="A decision awaiting approval.")],
    comment: Annotated[str, typer.Option(help="Why (recorded with the decision and in the audit trail).")] = "",
    user: UserOption = None,
    actor: ActorOption = None,
    config: ConfigOption = None,
) -> None:
    """Approve a decision awaiting approval (approver role): the next tick dispatches its action."""
    _answer("approve", decision_id, comment, user, actor, config)


@decisions_app.command("reject")
def decisions_reject(
    decision_id: Annotated[int, typer.Argument(help="A decision awaiting approval.")],
    comment: Annotated[str, typer.Option(help="Why (required; recorded with the decision and in the audit trail).")],
    user: UserOption = None,
    actor: ActorOption = None,
    config: ConfigOption = None,
) -> None:
    """Reject a decision awaiting approval (approver role): it is closed and its action never runs."""
    _answer("reject", decision_id, comment, user, actor, config)


def policy_mode(
    name: Annotated[str, typer.Argument(help="The policy (metadata.name).")],
    mode: Annotated[Optional[str], typer.Argument(help="enforce, dry-run or off; without it (and --clear): show.")] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Lift the override: the file's spec.mode applies again.")] = False,
    reason: Annotated[str, typer.Option(help="Why (required to set or clear; kept in the audit trail).")] = "",
    user: UserOption = None,
    actor: ActorOption = None,
    config: ConfigOption = None,
) -> None:
    """Set a policy's mode over its file's spec.mode, or --clear it (admin role); without either, show it.

    Registered as ``mape policy mode`` by :mod:`mape.cli`. The same act as the dashboard's Policies page
    (:mod:`mape.access.modes`): the planner plans the policy in this mode from the next tick, and the change is
    audited as ``policy.mode_changed``. Exit 3 when the role does not allow it, 2 for bad input.
    """
    from sqlmodel import select

    from knowledge import policy_modes
    from knowledge.tables import PolicyVersion
    from mape.access.modes import clear_policy_mode, set_policy_mode
    from mape.cli import _fail, _knowledge_session, _settings
    from mape.errors import MapeError

    if clear and mode is not None:
        _fail(f"give a mode or --clear, not both (got {mode!r} and --clear)")
    settings = _settings(config)
    if mode is None and not clear:
        with _knowledge_session(settings) as session:
            row = policy_modes.override(session, name)
            text = str(row) if row is not None else f"policy {name} has no mode override: its file's spec.mode applies"
        typer.echo(text)
        return
    identity = identity_of(settings, user, actor)
    at = datetime.now(timezone.utc)
    try:
        with _knowledge_session(settings) as session:
            known = name in set(session.exec(select(PolicyVersion.name).where(PolicyVersion.name == name)))
            if clear:
                lifted = clear_policy_mode(session, name, identity, reason=reason, at=at)
                text = (f"policy {name}: override {lifted.mode} lifted by {identity.name}; its file's spec.mode "
                        "applies from the next tick" if lifted is not None else None)
            else:
                assert mode is not None
                row = set_policy_mode(session, name, mode, identity, reason=reason, at=at)
                text = f"{row}; the planner plans it in {row.mode} from the next tick"
    except MapeError as exc:
        _fail(str(exc), code=3 if isinstance(exc, PermissionError) else 2)
    if text is None:
        _fail(f"policy {name} has no mode override to clear (see mape policy mode {name})")
    if not known:
        typer.echo(f"warning: no policy named {name!r} was ever loaded; the override applies once one is", err=True)
    typer.echo(text)


def _users_file(config: Path | None):  # type: ignore[no-untyped-def]
    from mape.access.users import UsersFile
    from mape.cli import _fail, _settings

    path = _settings(config).access.users_file
    if path is None:
        _fail("access.users_file is not set in the configuration: name the file the users live in first")
    return UsersFile(path)


@users_app.command("add")
def users_add(
    name: Annotated[str, typer.Argument(help="Sign-in name (an e-mail address for OIDC users).")],
    role: Annotated[str, typer.Option(help="viewer, approver or admin.")],
    oidc_only: Annotated[bool, typer.Option("--oidc-only", help="No password: signs in through OIDC only.")] = False,
    config: ConfigOption = None,
) -> None:
    """Add a user or replace their entry; the password comes from MAPE_NEW_PASSWORD or a prompt (asked twice)."""
    from mape.access.roles import Role
    from mape.cli import _fail
    from mape.errors import MapeError

    roles = [r.value for r in Role]
    if role not in roles:
        _fail(f"--role must be one of {', '.join(roles)} (got {role!r})")
    users = _users_file(config)
    password = None
    if not oidc_only:
        password = os.environ.get("MAPE_NEW_PASSWORD")
        if password is None:
            password = getpass.getpass(f"new password for {name}: ")
            if getpass.getpass("again: ") != password:
                _fail("the two passwords differ")
    try:
        users.add(name, Role(role), password)
    except MapeError as exc:
        _fail(str(exc))
    typer.echo(f"{name} is a{'n' if role == 'admin' else ''} {role} in {users.path}")


@users_app.command("list")
def users_list(config: ConfigOption = None) -> None:
    """Every user with their role (never a password hash)."""
    from mape.cli import _fail
    from mape.errors import MapeError

    users = _users_file(config)
    try:
        entries = users.entries()
    except MapeError as exc:
        _fail(str(exc))
    for entry in entries.values():
        typer.echo(f"{entry.name}  {entry.role.value}  {'password' if entry.password else 'oidc only'}")


@users_app.command("remove")
def users_remove(name: Annotated[str, typer.Argument(help="The user.")], config: ConfigOption = None) -> None:
    """Remove a user from the users file."""
    from mape.cli import _fail

    if not _users_file(config).remove(name):
        _fail(f"no user named {name!r}")
    typer.echo(f"{name} removed")
