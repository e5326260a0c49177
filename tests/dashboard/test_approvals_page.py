"""The Approvals page: a gated decision with its evidence; approvers approve or reject it with a comment, viewers only look."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from sqlmodel import select

from knowledge.approvals import answer
from knowledge.database import create_engine_for, session_scope
from knowledge.tables import AuditEvent, Decision
from mape.plan import Planner
from tests.dashboard.app_harness import knowledge_base, open_app, sign_in
from tests.plan.helpers import add_model, make_policy

T0 = datetime(2026, 1, 5, tzinfo=timezone.utc)


def _gated(tmp_path: Path) -> tuple[Path, int]:
    config = knowledge_base(tmp_path)
    engine = create_engine_for(f"sqlite:///{tmp_path / 'mape.db'}")
    with session_scope(engine) as session:
        planner = Planner([make_policy("careful", approval="required", approval_timeout="3650d",
                                       params={"window": "7d"})])
        (decision,) = planner.plan(session, [add_model(session, "fraud")], T0).decisions["fraud"]
        decision_id = decision.id
    engine.dispose()
    return config, decision_id


def _stored(tmp_path: Path, decision_id: int) -> tuple[Decision, list[str]]:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'mape.db'}")
    try:
        with session_scope(engine) as session:
            kinds = [e.kind for e in session.exec(select(AuditEvent).order_by(AuditEvent.id))]
            return session.get(Decision, decision_id), [k for k in kinds if k.startswith("decision.")]
    finally:
        engine.dispose()


def _approvals(app):  # type: ignore[no-untyped-def]
    app.sidebar.radio[0].set_value("Approvals")
    app.run()
    assert not app.exception, app.exception
    return app


def _button(app, label: str):  # type: ignore[no-untyped-def]
    return next(b for b in app.button if b.label == label)


def test_an_approver_sees_the_decision_and_approves_it_with_a_comment(tmp_path: Path, monkeypatch):
    config, decision_id = _gated(tmp_path)
    app = _approvals(sign_in(open_app(config, monkeypatch), "ann"))
    assert [s.value for s in app.subheader] == [f"Decision {decision_id}: retrain on fraud"]
    text = " ".join(m.value for m in app.markdown)
    assert "Policy **careful**" in text and 'the next tick runs **retrain** on **fraud** with {"window": "7d"}' in text
    next(t for t in app.text_input if t.label == "Comment").input("drift confirmed on the report")
    _button(app, "Approve").click()
    app.run()
    assert not app.exception, app.exception
    assert f"decision {decision_id} (careful -> retrain, approved): approved by ann; the next tick dispatches it." \
        in app.success[0].value
    assert app.info[0].value == "No decision awaits approval."
    decision, events = _stored(tmp_path, decision_id)
    assert (decision.status, decision.decided_by, decision.comment) == ("approved", "ann",
                                                                       "drift confirmed on the report")
    assert events == ["decision.approved"]


def test_a_rejection_without_a_comment_is_refused_and_with_one_closes_the_decision(tmp_path: Path, monkeypatch):
    config, decision_id = _gated(tmp_path)
    app = _approvals(sign_in(open_app(config, monkeypatch), "ada"))
    _button(app, "Reject").click()
    app.run()
    assert "'comment' parameter of reject must be a reason" in app.error[0].value
    assert _stored(tmp_path, decision_id)[0].status == "awaiting_approval"
    next(t for t in app.text_input if t.label == "Comment").input("the GPU budget is spent this week")
    _button(app, "Reject").click()
    app.run()
    assert "rejected by ada; it is closed." in app.success[0].value
    assert _stored(tmp_path, decision_id)[0].status == "rejected"


def test_a_viewer_sees_pending_decisions_but_no_buttons(tmp_path: Path, monkeypatch):
    config, decision_id = _gated(tmp_path)
    app = _approvals(sign_in(open_app(config, monkeypatch), "vic"))
    assert [s.value for s in app.subheader] == [f"Decision {decision_id}: retrain on fraud"]
    assert "signed in as a viewer" in app.warning[0].value
    assert not [b for b in app.button if b.label in ("Approve", "Reject")]


def test_a_decision_answered_elsewhere_first_is_refused_with_who_answered(tmp_path: Path, monkeypatch):
    config, decision_id = _gated(tmp_path)
    app = _approvals(sign_in(open_app(config, monkeypatch), "ann"))
    engine = create_engine_for(f"sqlite:///{tmp_path / 'mape.db'}")
    with session_scope(engine) as session:  # someone at the command line was quicker
        answer(session, decision_id, status="rejected", actor="ops", comment="no", at=T0)
    engine.dispose()
    _button(app, "Approve").click()
    app.run()
    assert "does not await approval: rejected by ops" in app.error[0].value
    decision, events = _stored(tmp_path, decision_id)
    assert decision.status == "rejected" and events == ["decision.rejected"]
