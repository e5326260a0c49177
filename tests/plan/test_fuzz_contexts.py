"""Whatever the knowledge base holds and whatever a loaded condition says, ``Planner.plan`` never raises (property-based).

Each example stores a new model with mangled knowledge: observations that are
NaN, infinite, 1e308, negative, missing (``None``), in the future or long
stale, under declared and unknown metric names; versions whose training
metrics (the context's ``baseline``) hold NaN, huge integers, strings,
nested junk or lone surrogates; symptoms of any kind and severity opened in
the future; earlier decisions at odd times. The planner runs the shipped
policies and a few generated ones whose conditions passed the loader, with
durations up to the longest a policy may give. It must return a report with
a row for the model, twice at the same tick (the second pass adds nothing),
and raise nothing.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from itertools import count
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine

from knowledge import registry
from knowledge.database import create_engine_for, session_scope
from knowledge.migrate import upgrade
from knowledge.tables import Decision, DecisionStatus, ModelVersion, Observation, Stage, Symptom
from mape.errors import PolicyError
from mape.plan import LoadedPolicy, Planner, load_policy_text
from mape.plan.context import build_context
from mape.plan.expressions import prepare
from mape.plan.policy import DURATION_LIMIT
from tests.plan.fuzzing import FUZZ, SHIPPED_TEXTS, cel_terms
from tests.plan.helpers import KNOWN_ACTIONS, add_model, policy_text

AT = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)
SHIPPED = [load_policy_text(text, f"policies/{name}", known_actions=KNOWN_ACTIONS)
           for name, text in SHIPPED_TEXTS.items()]
_models = count()

numbers = st.one_of(
    st.none(), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -1e308, 5e-324, -0.0, 0.0, -1.0, 1.0, 0.05, 0.9, 7200.0,
                     21600.0, 2.0**63, -(2.0**63)]),
)
metric_names = st.one_of(
    st.sampled_from(["drift.share_drifted", "drift.n_drifted", "drift.n_features", "drift.min_q_value",
                     "drift.detected", "drift.feature_detected", "performance.accuracy", "performance.accuracy_drop",
                     "performance.f1", "performance.n_labelled", "drift.", "performance.", "drift..x"]),
    st.tuples(st.sampled_from(["drift.", "performance.", "other.", ""]),
              st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)).map("".join),
)
offsets = st.one_of(st.just(timedelta(0)), st.sampled_from([timedelta(minutes=-5), timedelta(hours=-3),
                                                            timedelta(days=-400), timedelta(hours=1)]),
                    st.timedeltas(min_value=timedelta(days=-30), max_value=timedelta(days=2)))
json_junk = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=-(10**40), max_value=10**40),
              st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=10),
              st.sampled_from(["\ud800", "a\x00b", "0.9", ""])),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=8,
)
label_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=8)
durations = st.one_of(st.sampled_from(["0s", "5m", "6h", "1d", "36500d", 0, 1e-3]),
                      st.timedeltas(min_value=timedelta(0), max_value=DURATION_LIMIT).map(
                          lambda d: d.total_seconds()))


@st.composite
def knowledge(draw: st.DrawFn) -> dict[str, Any]:
    """What one model has in the knowledge base, relative to the tick's time."""
    n_versions = draw(st.integers(0, 3))
    production = draw(st.one_of(st.none(), st.integers(1, max(1, n_versions)))) if n_versions else None
    return {
        "labels": draw(st.dictionaries(st.sampled_from(["team", "tier", ""]) | label_text, label_text, max_size=3)),
        "observations": draw(st.lists(st.tuples(metric_names, numbers, offsets, st.booleans()), max_size=12)),
        "versions": [
            {"version": v, "stage": Stage.production.value if v == production else draw(
                st.sampled_from([Stage.archived.value, Stage.candidate.value, Stage.rejected.value])),
             "promoted_at": draw(st.one_of(st.none(), offsets)),
             "metrics": draw(st.dictionaries(st.sampled_from(["accuracy", "f1", "n_rows"]) | st.text(max_size=6),
                                             json_junk, max_size=4))}
            for v in range(1, n_versions + 1)
        ],
        "symptoms": draw(st.lists(st.tuples(
            st.sampled_from(["data_drift", "performance_drop"]) | st.text(max_size=12).filter(lambda s: "\x00" not in s),
            st.sampled_from(["info", "warning", "critical", "", "???"]), offsets, offsets), max_size=3)),
        "decisions": draw(st.lists(st.tuples(
            st.sampled_from(["retrain", "rollback", "other"]), st.sampled_from([s.value for s in DecisionStatus]),
            offsets), max_size=4)),
    }


#: Conditions that compile and read the mangled signals, next to generated ones (which often do not compile).
conditions = st.one_of(st.just("true"), cel_terms(), st.sampled_from([
    "true", "has(drift.share_drifted) && drift.share_drifted > 0.3", "drift.share_drifted >= 0.0",
    "'data_drift' in symptoms && symptoms.data_drift.age_seconds >= 7200",
    "has(performance.accuracy) && performance.accuracy < baseline.accuracy - 0.05",
    "model.can_roll_back && model.production_age_seconds < 21600", "model.labels.team == 'risk'",
    "performance.accuracy_drop / drift.n_features > 1.0", "since_last.retrain > 3600.0",
]))


@st.composite
def generated_policies(draw: st.DrawFn) -> list[LoadedPolicy]:
    """One to three policies with generated conditions and durations that the loader accepts."""
    policies: list[LoadedPolicy] = []
    for index in range(draw(st.integers(1, 3))):
        spec: dict[str, Any] = {
            "cooldown": draw(durations), "for": draw(st.sampled_from(["0s", "0s", "10m", "1h"])),
            "keep_firing_for": draw(st.sampled_from(["0s", "0s", "30m"])),
            "mode": draw(st.sampled_from(["enforce", "dry-run"])),
            "approval": draw(st.sampled_from(["none", "required"])),
            "approval_timeout": draw(durations), "priority": draw(st.integers(-5, 5)),
        }
        if draw(st.booleans()):
            spec["rate_limit"] = {"max": draw(st.integers(1, 3)), "per": draw(durations.filter(bool))}
        if draw(st.booleans()):
            spec["unless"] = draw(cel_terms())
        text = policy_text(f"fuzz-{index}", when=draw(conditions), action=draw(st.sampled_from(["retrain",
                                                                                                   "rollback"])),
                           **spec)
        try:
            policies.append(load_policy_text(text, f"fuzz-{index}.yaml", known_actions=KNOWN_ACTIONS))
        except PolicyError:
            continue  # not every generated condition compiles; the loader's own fuzz covers the refusals
    return policies


@pytest.fixture(scope="module")
def kb() -> Iterator[Engine]:
    """One SQLite knowledge base for all the examples: each adds its own model."""
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'mape.db'}"
        upgrade(url)
        engine = create_engine_for(url)
        yield engine
        engine.dispose()


def _store(session: Any, facts: dict[str, Any]) -> Any:
    # labels as one mapping: a label key may be any text, "name" included
    model = registry.upsert_model(session, name=f"fuzz-{next(_models)}", labels=dict(facts["labels"]),
                                  training_entrypoint="pkg.mod:train")
    for metric, value, offset, labelled in facts["observations"]:
        session.add(Observation(time=AT + offset, model_id=model.id, sensor="fuzz", metric=metric, value=value,
                                labels={"feature": "x"} if labelled else {}))
    for version in facts["versions"]:
        session.add(ModelVersion(model_id=model.id, version=version["version"], stage=version["stage"],
                                 metrics=version["metrics"],
                                 promoted_at=None if version["promoted_at"] is None else AT + version["promoted_at"]))
    for kind, severity, opened, seen in facts["symptoms"]:
        session.add(Symptom(model_id=model.id, kind=kind, severity=severity, opened_at=AT + opened,
                            last_seen_at=AT + seen))
    for i, (action, status, offset) in enumerate(facts["decisions"]):
        session.add(Decision(created_at=AT + offset, tick_at=AT + offset, model_id=model.id, policy_name="earlier",
                             action=action, status=status, dedup_key=f"{model.name}/earlier/{i}"))
    session.flush()
    return model


@pytest.mark.slow
@settings(FUZZ, max_examples=400, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(facts=knowledge(), policies=generated_policies())
def test_planning_over_any_knowledge_never_raises(kb: Engine, facts: dict[str, Any], policies: list[LoadedPolicy]):
    planner = Planner([*SHIPPED, *policies], actor="fuzz", max_age=timedelta(minutes=30))
    with session_scope(kb) as session:
        model = _store(session, facts)
        first = planner.plan(session, [model], AT)
        again = planner.plan(session, [model], AT)
        later = planner.plan(session, [model], AT + timedelta(minutes=5))
    assert set(first.decisions) == set(again.decisions) == set(later.decisions) == {model.name}
    assert again.created == 0
    assert [d.id for d in again.decisions[model.name]] == [d.id for d in first.decisions[model.name]]
    assert all(d.status in {s.value for s in DecisionStatus} for d in first.all_decisions + later.all_decisions)
    assert len(first.acting()) <= 1 and len(later.acting()) <= 1


@settings(FUZZ, max_examples=200)
@given(metrics=st.dictionaries(st.text(max_size=6), json_junk, max_size=4),
       labels=st.dictionaries(label_text, label_text, max_size=3))
def test_every_context_the_knowledge_base_gives_converts_to_cel(kb: Engine, metrics: dict[str, Any],
                                                                labels: dict[str, str]):
    """The planner converts each context to CEL values once (``prepare``): no stored value may break that."""
    with session_scope(kb) as session:
        model = _store(session, {"labels": labels, "observations": [], "symptoms": [], "decisions": [],
                                 "versions": [{"version": 1, "stage": Stage.production.value, "promoted_at": None,
                                               "metrics": metrics}]})
        context = build_context(session, model, AT)
    prepare(context)
    json.dumps(context, allow_nan=False)  # and it stays JSON PostgreSQL takes: the decision's evidence


def test_a_tick_planned_again_sees_the_context_it_saw_the_first_time(engine: Engine):
    # found by the fuzz above: `since_last` counted the tick's own decision, so planning the tick again fired a
    # policy that reads it, and added a decision to a tick already planned
    first_retrain = load_policy_text(policy_text("always", when="true", cooldown="0s"), "always.yaml",
                                     known_actions=KNOWN_ACTIONS)
    after_retrain = load_policy_text(policy_text("after", when="has(since_last.retrain)", cooldown="0s"),
                                     "after.yaml", known_actions=KNOWN_ACTIONS)
    planner = Planner([first_retrain, after_retrain], actor="test")
    with session_scope(engine) as session:
        model = add_model(session)
        first = planner.plan(session, [model], AT)
        again = planner.plan(session, [model], AT)
        later = planner.plan(session, [model], AT + timedelta(minutes=5))
    assert [d.policy_name for d in first.decisions["m"]] == ["always"]
    assert again.created == 0 and [d.id for d in again.decisions["m"]] == [d.id for d in first.decisions["m"]]
    assert sorted(d.policy_name for d in later.decisions["m"]) == ["after", "always"]
