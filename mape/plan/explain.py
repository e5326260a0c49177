"""Why a decision was taken or held back: one decision, with everything that made it.

What it does: :func:`explain_decision` reads one :class:`~knowledge.tables.Decision`
and gathers, from the knowledge base alone, what a person asks after the fact:
the model; the policy's name, the sha256 of the version that decided and that
version's text (``policy_version``); the ``when`` / ``unless`` conditions as
stored with the decision, each split into its ``&&`` terms and evaluated
again against the stored context snapshot; the values of the context those
conditions read (the *evidence*, e.g. ``performance.accuracy_drop = 0.05``);
the status and the planner's reason; the other decisions for the model in the
same tick (who outranked whom); and the action run with its state and result.

It is a pure read: no row is written, and nothing is evaluated against the
live knowledge base, only against the snapshot the planner stored in
``decision.evidence["context"]``.

Who calls it: ``mape policy explain`` (prints :meth:`Explanation.lines`, or
:meth:`Explanation.as_dict` as JSON); the dashboard may show the same object.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlmodel import Session

from knowledge import queries
from knowledge.tables import ActionRun, Decision, ManagedModel
from mape._util.timeutil import ensure_utc
from mape.errors import ConditionError
from mape.plan.expressions import CONTEXT_ROOTS, Condition

__all__ = ["ConditionTerm", "EvidenceValue", "Explanation", "explain_decision", "referenced_paths", "split_terms"]

_STRING = re.compile(r"""'(?:\\.|[^'\\])*'|"(?:\\.|[^"\\])*\"""")
_IDENT = r"[A-Za-z_]\w*"
_KEY = r"""\[\s*(?:'(?:\\.|[^'\\])*'|"(?:\\.|[^"\\])*")\s*\]"""
_CHAIN = re.compile(rf"(?<![\w.])({_IDENT})((?:\s*\.\s*{_IDENT}|\s*{_KEY})*)(\s*\()?")
_SEGMENT = re.compile(rf"\.\s*({_IDENT})|\[\s*('(?:\\.|[^'\\])*'|\"(?:\\.|[^\"\\])*\")\s*\]")
_MEMBERSHIP = re.compile(rf"""('(?:\\.|[^'\\])*'|"(?:\\.|[^"\\])*")\s+in\s+({_IDENT}(?:\s*\.\s*{_IDENT}|\s*{_KEY})*)""")


def _unquote(literal: str) -> str:
    return literal[1:-1].encode("utf-8").decode("unicode_escape") if "\\" in literal else literal[1:-1]


def _segments(root: str, rest: str) -> tuple[str, ...]:
    keys = [root]
    for ident, literal in _SEGMENT.findall(rest):
        keys.append(ident or _unquote(literal))
    return tuple(keys)


def _string_spans(expression: str) -> list[tuple[int, int]]:
    return [m.span() for m in _STRING.finditer(expression)]


def _inside(position: int, spans: Sequence[tuple[int, int]]) -> bool:
    return any(start <= position < end for start, end in spans)


def format_path(path: Sequence[str]) -> str:
    """``("model", "labels", "cost-center")`` → ``model.labels['cost-center']``."""
    text = path[0]
    for key in path[1:]:
        text += f".{key}" if re.fullmatch(_IDENT, key) else f"[{key!r}]"
    return text


def referenced_paths(expression: str, roots: Sequence[str] = CONTEXT_ROOTS) -> list[tuple[str, ...]]:
    """The context paths a CEL expression reads, in order of appearance, without repeats.

    A membership test ``'data_drift' in symptoms`` reads ``symptoms.data_drift``;
    a method call (``model.name.startsWith('x')``) reads the value it is called on.

    >>> for path in referenced_paths("'data_drift' in symptoms && symptoms.data_drift.age_seconds >= 7200"
    ...                              " && has(performance.accuracy_drop) && model.labels['cost-center'] == 'x.y'"):
    ...     print(format_path(path))
    symptoms.data_drift
    symptoms.data_drift.age_seconds
    performance.accuracy_drop
    model.labels['cost-center']
    """
    spans = _string_spans(expression)
    found: list[tuple[int, tuple[str, ...]]] = []
    membership_targets: set[int] = set()
    for match in _MEMBERSHIP.finditer(expression):
        if (match.start(), match.end(1)) not in spans:  # the quoted key must be a string literal of its own
            continue
        target = match.group(2)
        root = re.match(_IDENT, target)
        assert root is not None
        if root.group(0) in roots:
            found.append((match.start(), (*_segments(root.group(0), target[root.end():]), _unquote(match.group(1)))))
            membership_targets.add(match.start(2))
    for match in _CHAIN.finditer(expression):
        root, rest, call = match.groups()
        if root not in roots or _inside(match.start(), spans):
            continue
        path = _segments(root, rest)
        if call is not None:
            path = path[:-1]  # root.value.method( reads root.value
        if match.start() in membership_targets or not path:
            continue
        found.append((match.start(), path))
    result: list[tuple[str, ...]] = []
    for _, path in sorted(found, key=lambda item: item[0]):
        if path not in result:
            result.append(path)
    return result


def split_terms(expression: str) -> list[str]:
    """The ``&&`` terms of a condition, when it is a conjunction at the top level; else the whole of it.

    >>> split_terms("a.x > 1 && (b.y || c.z) && d.s == 'p && q'")
    ['a.x > 1', '(b.y || c.z)', "d.s == 'p && q'"]
    >>> split_terms("a.x > 1 && b.y || c.z")
    ['a.x > 1 && b.y || c.z']
    """
    spans = _string_spans(expression)
    depth = 0
    cuts: list[int] = []
    index = 0
    while index < len(expression):
        if _inside(index, spans):
            index += 1
            continue
        char = expression[index]
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif depth == 0 and (expression.startswith("||", index) or char == "?"):
            return [expression.strip()]  # not a conjunction at the top level: one term
        elif depth == 0 and expression.startswith("&&", index):
            cuts.append(index)
            index += 1
        index += 1
    terms: list[str] = []
    start = 0
    for cut in cuts:
        terms.append(expression[start:cut].strip())
        start = cut + 2
    terms.append(expression[start:].strip())
    return [t for t in terms if t]


@dataclass(frozen=True)
class ConditionTerm:
    """One ``&&`` term of a condition and its value on the stored context (``None``: could not be evaluated)."""

    expression: str
    value: bool | None
    error: str | None = None

    def __str__(self) -> str:
        value = {True: "true ", False: "false", None: "error"}[self.value]
        error = f"   ({self.error})" if self.error else ""
        return f"{value}  {self.expression}{error}"


@dataclass(frozen=True)
class EvidenceValue:
    """A context value a condition read: its path and value, or that it was absent."""

    path: str
    present: bool
    value: Any = None

    def __str__(self) -> str:
        shown = json.dumps(self.value, sort_keys=True, default=str) if self.present else "absent"
        return f"{self.path} = {shown}"


@dataclass
class Explanation:
    """Everything known about why one decision was taken or held back.

    Parameters
    ----------
    decision_id, model, policy, action, params, status, reason, priority, actor :
        The decision row.
    created_at, tick_at : datetime
        When it was decided, and the tick it belongs to (``None`` for a
        decision a person requested).
    decided_by, decided_at, comment :
        Who approved or rejected it, when, and why.
    policy_sha256 : str or None
        The hash of the policy version that made it.
    policy_text, policy_source, policy_author, policy_loaded_at :
        That version, from ``policy_version`` (``None`` when it was not
        stored, e.g. a manual request).
    mode, when, unless : str or None
        As stored with the decision.
    when_value, unless_value : bool or None
        The conditions evaluated again on the stored context.
    when_terms, unless_terms : list of ConditionTerm
        The same, term by term.
    evidence : list of EvidenceValue
        The context values the conditions read.
    context : dict
        The whole context snapshot.
    same_tick : list of dict
        The other decisions for the model in the same tick.
    action_run : dict or None
        The action run of the decision: state, attempts, times, result, message.
    """

    decision_id: int
    model: str
    policy: str
    action: str
    params: dict[str, Any]
    status: str
    reason: str
    priority: int
    actor: str
    created_at: datetime
    tick_at: datetime | None
    decided_by: str | None = None
    decided_at: datetime | None = None
    comment: str = ""
    policy_sha256: str | None = None
    policy_text: str | None = None
    policy_source: str | None = None
    policy_author: str | None = None
    policy_loaded_at: datetime | None = None
    mode: str | None = None
    when: str | None = None
    unless: str | None = None
    when_value: bool | None = None
    unless_value: bool | None = None
    when_terms: list[ConditionTerm] = field(default_factory=list)
    unless_terms: list[ConditionTerm] = field(default_factory=list)
    evidence: list[EvidenceValue] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict)
    same_tick: list[dict[str, Any]] = field(default_factory=list)
    action_run: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON values (datetimes in ISO 8601)."""
        return json.loads(json.dumps(asdict(self), default=_json_default))

    def lines(self) -> Iterator[str]:
        """The explanation for a person, section by section."""
        yield f"decision {self.decision_id}: {self.policy} -> {self.action} on model {self.model}: {self.status}"
        if self.reason:
            yield f"  reason: {self.reason}"
        tick = f", tick {self.tick_at.isoformat()}" if self.tick_at else ""
        yield f"  decided {self.created_at.isoformat()}{tick} by {self.actor or '-'}, priority {self.priority}"
        if self.params:
            yield f"  params: {json.dumps(self.params, sort_keys=True)}"
        if self.decided_by:
            at = f" at {self.decided_at.isoformat()}" if self.decided_at else ""
            comment = f": {self.comment}" if self.comment else ""
            yield f"  approved or rejected by {self.decided_by}{at}{comment}"
        yield ""
        sha = self.policy_sha256 or "unknown"
        yield f"policy {self.policy}, version sha256 {sha}"
        if self.policy_source or self.policy_author:
            yield f"  loaded from {self.policy_source or '-'}, owner {self.policy_author or '-'}"
        if self.mode:
            yield f"  mode {self.mode}"
        for name, expression, value, terms in (("when", self.when, self.when_value, self.when_terms),
                                                ("unless", self.unless, self.unless_value, self.unless_terms)):
            if expression is None:
                if name == "when":
                    yield "  when: none stored (not decided by a policy condition)"
                continue
            shown = {True: "true", False: "false", None: "could not be evaluated"}[value]
            yield f"  {name} ({shown} on the stored context):"
            for term in terms:
                yield f"    {term}"
        if self.evidence:
            yield ""
            yield "evidence (the context values the conditions read):"
            for item in self.evidence:
                yield f"  {item}"
        if self.same_tick:
            yield ""
            yield f"other decisions for {self.model} in the same tick:"
            for other in self.same_tick:
                reason = f": {other['reason']}" if other["reason"] else ""
                yield f"  decision {other['id']}: {other['policy']} -> {other['action']} ({other['status']}){reason}"
        yield ""
        run = self.action_run
        if run is None:
            yield f"action run: none ({_NO_RUN.get(self.status, 'nothing was executed for this decision')})"
        else:
            yield (f"action run {run['id']}: {run['action']} {run['state']}, "
                   f"{run['attempts']} attempt{'' if run['attempts'] == 1 else 's'}")
            for key in ("started_at", "finished_at"):
                if run[key]:
                    yield f"  {key.replace('_', ' ')}: {run[key]}"
            if run["message"]:
                yield f"  message: {run['message']}"
            if run["result"]:
                yield f"  result: {json.dumps(run['result'], sort_keys=True, default=str)}"
        if self.policy_text is not None:
            yield ""
            yield f"policy text (sha256 {sha}):"
            for line in self.policy_text.rstrip("\n").splitlines():
                yield f"  | {line}"

    def __str__(self) -> str:
        return "\n".join(self.lines())


_NO_RUN = {
    "proposed": "not dispatched yet: the next tick dispatches it",
    "approved": "not dispatched yet: the next tick dispatches it",
    "awaiting_approval": "it waits for a person to approve it",
    "suppressed": "a suppressed decision is never acted on",
    "dry_run": "a dry-run decision is only recorded",
    "rejected": "a person rejected it",
}


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return ensure_utc(value).isoformat()
    return str(value)


def _evaluate(expression: str, context: Mapping[str, Any]) -> tuple[bool | None, str | None]:
    try:
        return Condition(expression).evaluate(context), None
    except ConditionError as exc:
        return None, str(exc)


def _terms(expression: str | None, context: Mapping[str, Any]) -> tuple[bool | None, list[ConditionTerm]]:
    if expression is None:
        return None, []
    value, error = _evaluate(expression, context)
    terms = split_terms(expression)
    if len(terms) == 1:
        return value, [ConditionTerm(expression.strip(), value, error)]
    return value, [ConditionTerm(term, *_evaluate(term, context)) for term in terms]


def _lookup(context: Mapping[str, Any], path: Sequence[str]) -> EvidenceValue:
    value: Any = context
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            return EvidenceValue(format_path(path), present=False)
        value = value[key]
    return EvidenceValue(format_path(path), present=True, value=value)


def _evidence(expressions: Sequence[str | None], context: Mapping[str, Any]) -> list[EvidenceValue]:
    paths: list[tuple[str, ...]] = []
    for expression in expressions:
        for path in referenced_paths(expression or ""):
            if path not in paths:
                paths.append(path)
    return [_lookup(context, path) for path in paths]


def _run(run: ActionRun | None) -> dict[str, Any] | None:
    if run is None:
        return None
    return {"id": run.id, "action": run.action, "state": run.state, "attempts": run.attempts,
            "idempotency_key": run.idempotency_key, "params": dict(run.params or {}),
            "started_at": ensure_utc(run.started_at).isoformat() if run.started_at else None,
            "finished_at": ensure_utc(run.finished_at).isoformat() if run.finished_at else None,
            "result": dict(run.result or {}), "message": run.message, "flow_run_id": run.flow_run_id}


def _same_tick(session: Session, decision: Decision) -> list[dict[str, Any]]:
    if decision.tick_at is None:
        return []
    rows = [d for d in queries.decisions_at_tick(session, decision.tick_at)
            if d.model_id == decision.model_id and d.id != decision.id]
    return [{"id": d.id, "policy": d.policy_name, "action": d.action, "status": d.status, "reason": d.reason}
            for d in rows]


def explain_decision(session: Session, decision_id: int) -> Explanation | None:
    """Why decision ``decision_id`` was taken or held back; ``None`` when there is no such decision.

    Parameters
    ----------
    session : Session
        An open session on the knowledge base (only read).
    decision_id : int
        The decision's id, as the tick report, the dashboard and the log show it.

    Returns
    -------
    Explanation or None
    """
    decision = session.get(Decision, decision_id)
    if decision is None:
        return None
    model = session.get(ManagedModel, decision.model_id)
    evidence = dict(decision.evidence or {})
    context = evidence.get("context") if isinstance(evidence.get("context"), dict) else {}
    version = queries.policy_version(session, decision.policy_name, decision.policy_sha256) \
        if decision.policy_sha256 else None
    run = queries.run_of_decision(session, decision.id)
    when, unless = evidence.get("when"), evidence.get("unless")
    when_value, when_terms = _terms(when, context)
    unless_value, unless_terms = _terms(unless, context)
    return Explanation(
        decision_id=decision_id, model=model.name if model is not None else f"model_id={decision.model_id}",
        policy=decision.policy_name, action=decision.action, params=dict(decision.params or {}),
        status=decision.status, reason=decision.reason, priority=decision.priority, actor=decision.actor,
        created_at=ensure_utc(decision.created_at),
        tick_at=ensure_utc(decision.tick_at) if decision.tick_at else None,
        decided_by=decision.decided_by, decided_at=ensure_utc(decision.decided_at) if decision.decided_at else None,
        comment=decision.comment, policy_sha256=decision.policy_sha256,
        policy_text=version.text if version is not None else None,
        policy_source=version.source if version is not None else evidence.get("source"),
        policy_author=version.author if version is not None else None,
        policy_loaded_at=ensure_utc(version.loaded_at) if version is not None else None,
        mode=evidence.get("mode"), when=when, unless=unless, when_value=when_value, unless_value=unless_value,
        when_terms=when_terms, unless_terms=unless_terms, evidence=_evidence([when, unless], context),
        context=context, same_tick=_same_tick(session, decision), action_run=_run(run),
    )
