"""The decision log's queries on both databases: filters, paging, counts, distinct values, days, the CSV export, audit pages."""

from __future__ import annotations

import csv
import hashlib
import io
from datetime import date, datetime, timedelta, timezone

import pytest
from sqlalchemy.engine import Engine

from knowledge import audit, decision_log, queries, registry
from knowledge.database import session_scope
from knowledge.decision_log import AuditFilter, DecisionFilter
from knowledge.tables import ActionRun, Decision

T0 = datetime(2026, 3, 1, 9, tzinfo=timezone.utc)
POLICY_V1 = "name: drift\nwhen: drift.share_drifted > 0.3\naction: retrain\n"
POLICY_V2 = "name: drift\nwhen: drift.share_drifted > 0.4\naction: retrain\n"


def _history(engine: Engine) -> dict[str, int]:
    """Two models, 12 decisions over 4 days (drift v1 then v2, and a rollback policy); run and flow run for some."""
    with session_scope(engine) as session:
        fraud = registry.upsert_model(session, name="fraud").id
        churn = registry.upsert_model(session, name="churn").id
        registry.upsert_model(session, name="idle")  # no decision: not a choice of the model filter
        v1 = queries.record_policy_version(session, name="drift", text=POLICY_V1, source="policies/drift.yaml")
        queries.record_policy_version(session, name="drift", text=POLICY_V2, source="policies/drift.yaml")
        v2 = queries.policy_version(session, "drift", hashlib.sha256(POLICY_V2.encode()).hexdigest())
        ids: dict[str, int] = {}
        for i in range(12):
            model = fraud if i % 2 == 0 else churn
            policy, action = ("drift", "retrain") if i % 3 else ("latency", "rollback")
            sha = (v1.sha256 if i < 6 else v2.sha256) if policy == "drift" else None
            status = ("proposed", "suppressed", "dry_run", "approved")[i % 4]
            decision = Decision(created_at=T0 + timedelta(hours=8 * i), model_id=model, policy_name=policy,
                                policy_sha256=sha, action=action, status=status, reason=f"reason {i}",
                                params={"i": i}, evidence={"drift.share_drifted": i / 10}, dedup_key=f"d{i}")
            session.add(decision)
            session.flush()
            ids[f"d{i}"] = decision.id
            if status in ("proposed", "approved"):
                session.add(ActionRun(decision_id=decision.id, model_id=model, action=action,
                                      idempotency_key=f"k{i}", state="succeeded", verdict="pass",
                                      flow_run_id=f"0000-{i}"))
    return ids


def test_filter_options_are_the_distinct_values_the_decisions_hold_and_their_time_span(engine: Engine):
    _history(engine)
    with session_scope(engine) as session:
        options = decision_log.filter_options(session)
    assert options.models == ("churn", "fraud")
    assert options.policies == ("drift", "latency")
    assert options.actions == ("retrain", "rollback")
    assert options.statuses == ("approved", "dry_run", "proposed", "suppressed")
    assert (options.first, options.last) == (T0, T0 + timedelta(hours=88))


def test_an_empty_knowledge_base_has_no_choices_no_rows_and_a_header_only_export(engine: Engine):
    with session_scope(engine) as session:
        options = decision_log.filter_options(session)
        assert options.models == () and options.first is None and options.last is None
        assert decision_log.count_decisions(session, DecisionFilter()) == 0
        assert decision_log.decision_page(session, DecisionFilter()) == []
        assert decision_log.decisions_per_day(session, DecisionFilter()) == []
        assert decision_log.decision_detail(session, 1) is None
        out = io.StringIO()
        assert decision_log.write_csv(session, DecisionFilter(), out) == 0
    assert out.getvalue().splitlines() == [",".join(decision_log.CSV_COLUMNS)]


def test_filters_narrow_the_listing_and_the_count_agrees(engine: Engine):
    ids = _history(engine)
    cases = {
        DecisionFilter(): 12,
        DecisionFilter(models=["fraud"]): 6,
        DecisionFilter(policies=["latency"]): 4,
        DecisionFilter(actions=["retrain"], statuses=["proposed", "approved"]): 4,
        DecisionFilter(models=["churn"], policies=["drift"], statuses=["suppressed"]): 2,
        DecisionFilter(since=T0 + timedelta(days=1), until=T0 + timedelta(days=2)): 3,
        DecisionFilter(models=["idle"]): 0,
    }
    with session_scope(engine) as session:
        for flt, expected in cases.items():
            rows = decision_log.decision_page(session, flt, limit=100)
            assert decision_log.count_decisions(session, flt) == len(rows) == expected, flt
        rows = decision_log.decision_page(session, DecisionFilter(models=["churn"], policies=["drift"],
                                                                   statuses=["suppressed"]))
    assert [r.id for r in rows] == [ids["d5"], ids["d1"]]  # newest first
    assert {(r.model, r.policy, r.status) for r in rows} == {("churn", "drift", "suppressed")}


def test_pages_are_newest_first_without_overlap_and_rows_carry_model_policy_version_and_run(engine: Engine):
    ids = _history(engine)
    with session_scope(engine) as session:
        pages = [decision_log.decision_page(session, DecisionFilter(), offset=o, limit=5) for o in (0, 5, 10)]
    assert [len(p) for p in pages] == [5, 5, 2]
    listed = [r.id for p in pages for r in p]
    assert listed == [ids[f"d{i}"] for i in range(11, -1, -1)]
    by_id = {r.id: r for p in pages for r in p}
    first_drift, later_drift, rollback = by_id[ids["d1"]], by_id[ids["d8"]], by_id[ids["d0"]]
    assert (first_drift.policy_version, later_drift.policy_version, rollback.policy_version) == (1, 2, None)
    assert (rollback.model, rollback.run_state, rollback.verdict, rollback.flow_run_id) == \
        ("fraud", "succeeded", "pass", "0000-0")
    assert (first_drift.action_run_id, first_drift.flow_run_id) == (None, None)  # suppressed: nothing ran
    assert first_drift.params == {"i": 1} and first_drift.created_at == T0 + timedelta(hours=8)


def test_the_detail_has_the_evidence_the_policy_version_text_and_the_run(engine: Engine):
    ids = _history(engine)
    with session_scope(engine) as session:
        detail = decision_log.decision_detail(session, ids["d8"])
        assert detail is not None
        assert detail.model == "fraud" and detail.decision.evidence == {"drift.share_drifted": 0.8}
        assert detail.policy_version_number == 2 and detail.policy_version is not None
        assert (detail.policy_version.text, detail.policy_version.source) == (POLICY_V2, "policies/drift.yaml")
        assert detail.run is not None and detail.run.flow_run_id == "0000-8"
        rollback = decision_log.decision_detail(session, ids["d3"])
        assert rollback is not None and rollback.policy_version is None and rollback.run is not None


def test_decisions_per_day_count_by_utc_day_and_status(engine: Engine):
    _history(engine)
    with session_scope(engine) as session:
        per_day = decision_log.decisions_per_day(session, DecisionFilter(models=["fraud"]))
    # fraud: decisions 0, 2, 4, 6, 8, 10 at 09:00, 01:00 (+1 d), 17:00 (+1 d), 09:00 (+2 d), ...
    assert per_day == [(date(2026, 3, 1), "proposed", 1), (date(2026, 3, 2), "dry_run", 1),
                       (date(2026, 3, 2), "proposed", 1), (date(2026, 3, 3), "dry_run", 1),
                       (date(2026, 3, 4), "dry_run", 1), (date(2026, 3, 4), "proposed", 1)]


def test_the_csv_export_has_every_filtered_row_newest_first_and_says_where_it_was_cut(engine: Engine):
    ids = _history(engine)
    with session_scope(engine) as session:
        out = io.StringIO()
        assert decision_log.write_csv(session, DecisionFilter(policies=["latency"]), out) == 4
        rows = list(csv.DictReader(io.StringIO(out.getvalue())))
        assert [int(r["id"]) for r in rows] == [ids["d9"], ids["d6"], ids["d3"], ids["d0"]]
        assert rows[3] == {**rows[3], "model": "fraud", "policy": "latency", "action": "rollback",
                           "status": "proposed", "run_state": "succeeded", "flow_run_id": "0000-0",
                           "created_at": T0.isoformat(), "params": '{"i": 0}'}
        cut = io.StringIO()
        assert decision_log.write_csv(session, DecisionFilter(), cut, cap=3) == 3
    lines = cut.getvalue().splitlines()
    assert len(lines) == 5 and lines[-1] == "# cut at 3 rows: narrow the filters to export the rest"


def test_audit_events_are_paged_newest_first_and_filtered_by_kind_and_actor(engine: Engine):
    with session_scope(engine) as session:
        for i in range(7):
            audit.record(session, actor=("ann", "controller")[i % 2], kind=("decision.approved", "action.finished")[i % 2],
                         subject=f"thing {i}", time=T0 + timedelta(minutes=i))
    with session_scope(engine) as session:
        assert decision_log.audit_filter_options(session) == (("action.finished", "decision.approved"),
                                                               ("ann", "controller"))
        everything = AuditFilter()
        assert decision_log.count_audit_events(session, everything) == 7
        first = decision_log.audit_page(session, everything, limit=4)
        second = decision_log.audit_page(session, everything, offset=4, limit=4)
        assert [e.subject for e in first + second] == [f"thing {i}" for i in range(6, -1, -1)]
        ann = AuditFilter(actors=["ann"])
        assert decision_log.count_audit_events(session, ann) == 4
        assert {e.kind for e in decision_log.audit_page(session, ann)} == {"decision.approved"}


@pytest.mark.parametrize("kwargs, message", [
    ({"models": "fraud"}, "The 'models' parameter of DecisionFilter must be a sequence of names. Got 'fraud'"),
    ({"since": "2026-03-01"}, "The 'since' parameter of DecisionFilter must be a datetime or None"),
    ({"since": T0, "until": T0}, "The 'until' parameter of DecisionFilter must be after 'since'"),
])
def test_a_bad_filter_is_refused_naming_the_field(kwargs, message):  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        DecisionFilter(**kwargs)


def test_a_bad_page_is_refused_naming_the_parameter(engine: Engine):
    with session_scope(engine) as session, pytest.raises(ValueError, match="'offset' parameter of decision_page"):
        decision_log.decision_page(session, DecisionFilter(), offset=-1)
