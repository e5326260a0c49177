"""The evaluation context of one managed model: what policy conditions can see.

What it does: :func:`build_context` reads the knowledge base as of a tick's
logical time and returns a plain, JSON-serialisable mapping with the roots of
:data:`CONTEXT_ROOTS`:

``drift``
    The newest summary observations (empty labels) named ``drift.<key>``:
    ``share_drifted``, ``n_drifted``, ``n_features``, ``min_q_value``,
    ``detected`` (a boolean), and whatever else the monitor reports.
``performance``
    The same for ``performance.<key>``: ``accuracy``, ``f1``,
    ``accuracy_drop``, ``n_labelled``, ...
``fairness``, ``gpu``, ``carbon``, ``serving``
    The same for ``fairness.<key>`` (gaps between groups:
    ``demographic_parity_difference``, ``equalized_odds_difference``, ...),
    ``gpu.<key>`` (``utilization``, ``memory_used_fraction``, ...),
    ``carbon.<key>`` (``intensity`` in gCO2/kWh now, ``forecast_min`` over
    the forecast horizon, ...) and ``serving.<key>`` (``latency_p95_ms``,
    ``error_rate``, ``replicas``, ...), from whichever sensors write them.
``quality``
    The data-quality summary of the drift window, checked before drift:
    ``schema_changes`` (``missing_columns`` + ``new_columns`` +
    ``retyped_columns``), ``null_spikes``, ``out_of_range_spikes``,
    ``unseen_category_columns``, ``max_null_rate_increase``,
    ``max_out_of_range_share``, ``max_unseen_category_share``, ``issues``
    (columns with any problem) and ``n_current``.
``baseline``
    The ``metrics`` of the production version (e.g. ``accuracy`` at
    training time); empty without a production version.
``promotion``
    What the promotion gate measured when the version in production was
    promoted (its ``evaluation``), on held-out rows both versions predicted:
    ``replaced_version`` (the version it replaced), ``n`` (rows), and for
    ``accuracy`` (``mae``, ``rmse`` for regressors) and the group gaps
    ``demographic_parity_difference``, ``equalized_odds_difference`` and
    ``equal_opportunity_difference``, ``promotion.<name>`` (the version in
    production) and ``promotion.replaced_<name>`` (the one it replaced).
    Empty for a version no gate promoted (a bootstrap, a person's promotion).
``symptoms``
    Open symptoms by kind: ``{severity, opened_at (ISO 8601), age_seconds}``.
``model``
    ``name``, ``labels``, ``versions`` (how many), ``can_roll_back``,
    ``rollback_version`` (the version a rollback would return to), and,
    with a production version, ``production_version`` (its number) and
    ``production_age_seconds`` (since its promotion).
``since_last``
    By action type, seconds since the last acting (proposed, awaiting
    approval, approved) decision of that action for this model, made before
    the tick; no key if there has been none. The tick's own decisions do not
    count, so a tick planned again sees the context it saw the first time.

A signal that is not available is absent, never zero: missing observations,
non-finite values, and, with ``max_age``, observations (and symptoms not seen)
older than ``at - max_age``. A condition that reads an absent key does not
hold (see :mod:`mape.plan.expressions`), so a stale or missing signal never
makes a policy fire. Metric keys named ``detected`` or ``*_detected`` become
booleans; every other metric is a float (a CEL double), counts included, so
``drift.n_drifted / drift.n_features`` is a ratio, not CEL's integer division.

Who calls it: :class:`mape.plan.planner.Planner` once per model and tick (the
context is stored as the decision's evidence); the dashboard and
``mape policy`` commands may call it to show what a policy would see.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session

from knowledge import queries
from knowledge.tables import ManagedModel, ModelVersion, Observation, Stage, Symptom
from mape._util.timeutil import ensure_utc
from mape.plan.expressions import CONTEXT_ROOTS
from mape.plan.fields import PROMOTION_METRICS

__all__ = ["CONTEXT_ROOTS", "METRIC_ROOTS", "assemble_context", "build_context", "build_contexts", "canary_view",
           "metric_root"]

#: Context roots filled from observations: the metric name prefix is ``<root>.``.
METRIC_ROOTS: tuple[str, ...] = ("drift", "performance", "fairness", "gpu", "carbon", "serving", "quality")


def _metric_value(key: str, value: float | None) -> bool | int | float | None:
    if value is None:
        return None
    value = float(value)
    if not math.isfinite(value):
        return None
    if key == "detected" or key.endswith("_detected"):
        return bool(value)
    return value  # always a double, counts too: CEL's int arithmetic would make n_drifted / n_features 0


def _json_scalar(value: Any) -> Any:
    """Drop values JSON (and PostgreSQL's json type) or CEL cannot hold: NaN, infinities, strings with lone surrogates.

    Integers past 64 bits become doubles (dropped if even a double cannot hold them).

    >>> _json_scalar({"accuracy": float("nan"), "rows": 10**30, "note": "\\ud800", "ok": [1, "a"]})
    {'rows': 1e+30, 'ok': [1, 'a']}
    """
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        try:
            return float(value)
        except OverflowError:
            return None
    if isinstance(value, str) and not _encodable(value):
        return None
    if isinstance(value, dict):
        return {str(k): v for k, v in ((k, _json_scalar(v)) for k, v in value.items())
                if v is not None and _encodable(str(k))}
    if isinstance(value, (list, tuple)):
        return [_json_scalar(v) for v in value]
    return value


def _encodable(text: str) -> bool:
    """Whether ``text`` is valid Unicode (no lone surrogate, which neither UTF-8 nor CEL can carry)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _metric_roots(observations: dict[str, Observation], roots: Sequence[str],
                  oldest: datetime | None) -> dict[str, dict[str, Any]]:
    """The metric roots among ``roots`` filled from the observations, in one pass over them (keys in name order)."""
    result: dict[str, dict[str, Any]] = {root: {} for root in roots if root in METRIC_ROOTS}
    for name in sorted(observations):
        root, _, key = name.partition(".")
        target = result.get(root)
        if target is None or not key:
            continue
        obs = observations[name]
        if oldest is not None and ensure_utc(obs.time) < oldest:
            continue
        value = _metric_value(key, obs.value)
        if value is not None:
            target[key] = value
    return result


def metric_root(observations: dict[str, Observation], root: str, oldest: datetime | None) -> dict[str, Any]:
    """One root filled from observations (``drift``, ``performance``), as :func:`assemble_context` fills it.

    >>> from types import SimpleNamespace as Obs
    >>> from datetime import timezone
    >>> t = datetime(2026, 1, 5, tzinfo=timezone.utc)
    >>> metric_root({"drift.detected": Obs(time=t, value=1.0), "drift.n_drifted": Obs(time=t, value=4)}, "drift", None)
    {'detected': True, 'n_drifted': 4.0}
    """
    return _metric_roots(observations, (root,), oldest)[root]


def _symptoms(symptoms: list[Symptom], at: datetime, oldest: datetime | None) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for symptom in symptoms:
        opened = ensure_utc(symptom.opened_at)
        if opened > at or (oldest is not None and ensure_utc(symptom.last_seen_at) < oldest):
            continue
        previous = result.get(symptom.kind)
        if previous is not None and previous["opened_at"] <= opened.isoformat():
            continue  # two open rows of one kind should not happen; keep the older
        result[symptom.kind] = {
            "severity": symptom.severity,
            "opened_at": opened.isoformat(),
            "age_seconds": (at - opened).total_seconds(),
        }
    return result


def _model(model: ManagedModel, versions: list[ModelVersion],
           at: datetime) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    production = next((v for v in versions if v.stage == Stage.production.value), None)
    # the rule of knowledge.registry.rollback_target: the retired version that served last (stints in
    # production do not overlap, so the latest promotion among them is the latest retirement)
    served = [v for v in versions if v.stage == Stage.archived.value and v.promoted_at is not None]
    info: dict[str, Any] = {
        "name": model.name,
        "labels": _json_scalar(dict(model.labels or {})),
        "versions": len(versions),
        "can_roll_back": bool(served),
    }
    if served:
        info["rollback_version"] = max(served, key=lambda v: (ensure_utc(v.promoted_at), v.version)).version
    baseline: dict[str, Any] = {}
    promotion: dict[str, Any] = {}
    if production is not None:
        info["production_version"] = production.version
        if production.promoted_at is not None:
            info["production_age_seconds"] = (at - ensure_utc(production.promoted_at)).total_seconds()
        baseline = _json_scalar(dict(production.metrics or {}))
        promotion = promotion_root(getattr(production, "evaluation", None))
    return info, baseline, promotion


def promotion_root(evaluation: Any) -> dict[str, Any]:
    """The ``promotion`` root from a version's stored gate ``evaluation`` (see :mod:`mape.execute.gate`).

    >>> promotion_root({"n": 400, "champion_version": 1, "candidate": {"accuracy": 0.9},
    ...                 "champion": {"accuracy": 0.8}, "fairness": {"gaps": {
    ...                     "demographic_parity_difference": {"candidate": 0.12, "champion": 0.3}}}})
    {'n': 400.0, 'replaced_version': 1, 'accuracy': 0.9, 'replaced_accuracy': 0.8, \
'demographic_parity_difference': 0.12, 'replaced_demographic_parity_difference': 0.3}
    >>> promotion_root(None)
    {}
    """
    if not isinstance(evaluation, dict):
        return {}
    root: dict[str, Any] = {}
    n = _number(evaluation.get("n"))
    if n is not None:
        root["n"] = n
    replaced = evaluation.get("champion_version")
    if isinstance(replaced, int) and not isinstance(replaced, bool):
        root["replaced_version"] = replaced
    pairs: list[tuple[Any, Any]] = [(evaluation.get("candidate"), evaluation.get("champion"))]
    gaps = (evaluation.get("fairness") or {}).get("gaps") if isinstance(evaluation.get("fairness"), dict) else None
    if isinstance(gaps, dict):
        pairs.append(({k: v.get("candidate") for k, v in gaps.items() if isinstance(v, dict)},
                      {k: v.get("champion") for k, v in gaps.items() if isinstance(v, dict)}))
    for ours, theirs in pairs:
        for prefix, numbers in (("", ours), ("replaced_", theirs)):
            for name, value in (numbers or {}).items() if isinstance(numbers, dict) else ():
                number = _number(value)
                if name in PROMOTION_METRICS and number is not None:
                    root[prefix + name] = number
    return root


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def build_contexts(
    session: Session, models: Sequence[ManagedModel], at: datetime, *, max_age: timedelta | None = None
) -> dict[int, dict[str, Any]]:
    """The contexts of many models as of ``at``, by model id, in a handful of fleet-wide queries.

    The same as :func:`build_context` for each model (which calls this); a
    planning pass over a fleet costs a few queries, not a few per model.
    """
    at = ensure_utc(at)
    oldest = at - max_age if max_age is not None else None
    ids = []
    for model in models:
        if model.id is None:
            raise ValueError(f"{model} has no id: store it before building its context")
        ids.append(model.id)
    observations = queries.latest_summary_metrics_fleet(session, ids, until=at, since=oldest,
                                                        prefixes=tuple(f"{root}." for root in METRIC_ROOTS))
    symptoms = queries.open_symptoms_fleet(session, ids)
    versions = queries.version_summaries_fleet(session, ids)
    since_last = queries.last_action_times_fleet(session, ids, at)
    contexts: dict[int, dict[str, Any]] = {}
    for model in models:
        assert model.id is not None
        contexts[model.id] = assemble_context(model, observations.get(model.id, {}), symptoms.get(model.id, []),
                                              versions.get(model.id, []), since_last.get(model.id, {}), at,
                                              oldest=oldest)
    return contexts


def assemble_context(model: ManagedModel, observations: dict[str, Observation], symptoms: list[Symptom],
                     versions: list[ModelVersion], since_last: dict[str, float], at: datetime, *,
                     oldest: datetime | None, roots: Collection[str] | None = None) -> dict[str, Any]:
    """One model's context from rows already read: what :func:`build_contexts` does for each model.

    Pure (reads no database), so ``mape policy simulate`` builds the contexts of
    past ticks from the rows as they were then with exactly the live semantics.

    Parameters
    ----------
    model : ManagedModel
        The model (``name`` and ``labels`` are read).
    observations : dict of str to Observation
        The newest summary observation of each metric at or before ``at``
        (objects with ``time`` and ``value``).
    symptoms : list of Symptom
        The symptoms open at ``at`` (``kind``, ``severity``, ``opened_at``, ``last_seen_at``).
    versions : list of ModelVersion
        The model's versions as they stood at ``at`` (``version``, ``stage``,
        ``promoted_at``, ``metrics``), in version order.
    since_last : dict of str to float
        Seconds since the last acting decision of each action type.
    at : datetime
        The tick's logical time (aware UTC).
    oldest : datetime, optional
        The staleness bound ``at - max_age``; ``None``: none.
    roots : collection of str, optional
        Build only these roots (the ones the conditions read); default: all.
    """
    wanted = CONTEXT_ROOTS if roots is None else tuple(root for root in CONTEXT_ROOTS if root in roots)
    context: dict[str, Any] = _metric_roots(observations, wanted, oldest)
    if "model" in wanted or "baseline" in wanted or "promotion" in wanted:
        context["model"], context["baseline"], context["promotion"] = _model(model, versions, at)
    if "symptoms" in wanted:
        context["symptoms"] = _symptoms(symptoms, at, oldest)
    if "since_last" in wanted:
        context["since_last"] = since_last
    return {root: context[root] for root in wanted}


def canary_view(context: dict[str, Any], observations: dict[str, Any], candidate_metrics: dict[str, Any], *,
                oldest: datetime | None) -> dict[str, Any]:
    """A model's context as a canary's step is verified on: ``performance`` and ``baseline`` are the candidate's.

    ``performance`` is filled from the Monitor's ``canary.<key>`` observations
    (the scores of the predictions the canary's replicas served, see
    :mod:`mape.monitor.stage`) instead of production's, and ``baseline`` is the
    candidate's training metrics, so that one ``verify.expect`` such as
    ``performance.accuracy >= baseline.accuracy - 0.03`` means the same during
    the canary and after the promotion. Every other root is the model's.

    >>> from types import SimpleNamespace as Obs
    >>> from datetime import timezone
    >>> t = datetime(2026, 1, 5, tzinfo=timezone.utc)
    >>> view = canary_view({"performance": {"accuracy": 0.7}, "baseline": {"accuracy": 0.8}, "drift": {}},
    ...                    {"canary.accuracy": Obs(time=t, value=0.91)}, {"accuracy": 0.93}, oldest=None)
    >>> view["performance"], view["baseline"], view["drift"]
    ({'accuracy': 0.91}, {'accuracy': 0.93}, {})
    """
    renamed = {f"performance.{name.partition('.')[2]}": obs for name, obs in observations.items()
               if name.startswith("canary.") and name != "canary.version"}
    return {**context, "performance": metric_root(renamed, "performance", oldest),
            "baseline": _json_scalar(dict(candidate_metrics or {}))}


def build_context(
    session: Session, model: ManagedModel, at: datetime, *, max_age: timedelta | None = None
) -> dict[str, Any]:
    """The CEL evaluation context of ``model`` as of ``at``.

    Parameters
    ----------
    session : Session
        An open session on the knowledge base (only read).
    model : ManagedModel
        A stored managed model.
    at : datetime
        The tick's logical time (aware UTC): nothing observed after it is used.
    max_age : timedelta, optional
        Observations older than ``at - max_age``, and open symptoms last seen
        before it, are left out. ``None``: no staleness bound.

    Returns
    -------
    dict
        ``{"drift": {...}, "performance": {...}, "baseline": {...},
        "symptoms": {...}, "model": {...}, "since_last": {...}}``, see the
        module docstring; JSON-serialisable.
    """
    if model.id is None:
        raise ValueError(f"{model} has no id: store it before building its context")
    return build_contexts(session, [model], at, max_age=max_age)[model.id]
