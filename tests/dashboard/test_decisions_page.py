"""The Decisions page: filters narrow the list, a decision's detail (evidence, policy version, flow-run link), the CSV
export, and the audit trail's verdict (an altered event is named)."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import text
from streamlit.runtime.media_file_manager import MediaFileManager
from streamlit.testing.v1 import AppTest

from knowledge import audit, queries, registry
from knowledge.database import create_engine_for, session_scope
from knowledge.tables import ActionRun, Decision
from tests.dashboard.app_harness import APP, knowledge_base, open_app, open_page, sign_in

T0 = datetime(2026, 3, 1, 9, tzinfo=timezone.utc)
POLICY = "name: retrain-on-drift\nwhen: drift.share_drifted > 0.3\naction: retrain\n"
FLOW_RUN = "6f1c1c9e-9d55-4c7e-8a8e-0b1f6e0b7d2a"


def _history(tmp_path: Path) -> tuple[Path, int]:
    """The harness's knowledge base plus a model "fraud" with 5 decisions; the newest ran as a Prefect flow run."""
    config = knowledge_base(tmp_path)
    engine = create_engine_for(f"sqlite:///{tmp_path / 'mape.db'}")
    with session_scope(engine) as session:
        fraud = registry.upsert_model(session, name="fraud").id
        version = queries.record_policy_version(session, name="retrain-on-drift", text=POLICY,
                                                source="policies/retrain.yaml", author="risk-team")
        for i in range(5):
            decision = Decision(created_at=T0 + timedelta(hours=i), model_id=fraud, policy_name="retrain-on-drift",
                                policy_sha256=version.sha256, action="retrain",
                                status="proposed" if i == 4 else "suppressed", reason=f"drift {i}",
                                evidence={"drift.share_drifted": 0.31 + i / 100, "window": "7d"}, dedup_key=f"f{i}")
            session.add(decision)
            session.flush()
        session.add(ActionRun(decision_id=decision.id, model_id=fraud, action="retrain", idempotency_key="k",
                              state="succeeded", attempts=1, started_at=T0 + timedelta(hours=4, minutes=1),
                              finished_at=T0 + timedelta(hours=5), flow_run_id=FLOW_RUN, verdict="pass"))
        audit.record(session, actor="ann", kind="decision.approved", subject=f"decision {decision.id}")
        newest = decision.id
    engine.dispose()
    return config, newest


def _decisions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, who: str = "vic") -> tuple[AppTest, int]:
    config, newest = _history(tmp_path)
    return open_page(sign_in(open_app(config, monkeypatch), who), "Decisions"), newest


def _listed(app: AppTest) -> list[int]:
    """The ids in the decisions' table (the audit trail's tab has a table too); [] when it is not drawn."""
    tables = [d.value for d in app.dataframe if "policy" in d.value.columns]
    return [int(i) for i in tables[0]["id"]] if tables else []


def _text(app: AppTest) -> str:
    return "\n".join(m.value for m in app.markdown)


def test_a_viewer_sees_every_decision_newest_first_and_the_filters_narrow_the_list(tmp_path: Path, monkeypatch):
    app, newest = _decisions(tmp_path, monkeypatch)
    assert app.title[0].value == "Decisions"
    assert _listed(app) == [1] + [newest - i for i in range(5)]  # the harness's decision is made now, fraud's in March
    assert "6 decisions match" in app.caption[0].value
    app.multiselect(key="decisions_model").set_value(["credit-risk"])
    app.run()
    assert _listed(app) == [1] and "1 decisions match" in app.caption[0].value
    app.multiselect(key="decisions_model").set_value([])
    app.multiselect(key="decisions_status").set_value(["suppressed"])
    app.run()
    assert _listed(app) == [newest - i for i in range(1, 5)]
    app.date_input(key="decisions-days").set_value((T0.date(), T0.date()))
    app.run()
    assert len(_listed(app)) == 4  # all on the first of March
    app.date_input(key="decisions-days").set_value((T0.date() + timedelta(days=1), T0.date() + timedelta(days=2)))
    app.run()
    assert _listed(app) == [] and app.info[0].value == "No decision matches these filters."


def test_the_detail_shows_the_evidence_the_policy_version_and_the_flow_run_link(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("PREFECT_UI_URL", "http://prefect.example:4200/")
    app, newest = _decisions(tmp_path, monkeypatch)
    app.multiselect(key="decisions_model").set_value(["fraud"])
    app.run()
    assert app.selectbox(key="decisions-picked").value == newest  # the newest listed is shown first
    assert app.subheader[0].value == f"Decision {newest}: retrain on fraud"
    assert app.json[0].value == '{"drift.share_drifted": 0.35, "window": "7d"}'
    shown = _text(app)
    assert "Policy **retrain-on-drift** version 1, status **proposed**" in shown
    assert "**Action run 1**: retrain, state **succeeded**, 1 attempt(s), verdict **pass**" in shown
    assert f"Prefect flow run: [{FLOW_RUN}](http://prefect.example:4200/runs/flow-run/{FLOW_RUN})" in shown
    assert app.code[0].value == POLICY.strip()  # st.code drops the last newline
    app.selectbox(key="decisions-picked").set_value(newest - 1)
    app.run()
    assert "No action run: the decision is suppressed, so nothing runs." in app.info[0].value


def test_without_a_prefect_ui_the_flow_run_id_is_shown_without_a_link(tmp_path: Path, monkeypatch):
    for name in ("PREFECT_UI_URL", "PREFECT_API_URL", "PREFECT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PREFECT_PROFILES_PATH", str(tmp_path / "no-profiles.toml"))
    app, newest = _decisions(tmp_path, monkeypatch)
    app.selectbox(key="decisions-picked").set_value(newest)
    app.run()
    assert f"Prefect flow run `{FLOW_RUN}` (no Prefect UI is configured" in _text(app)


def test_the_csv_download_holds_every_filtered_row(tmp_path: Path, monkeypatch):
    made: dict[str, object] = {}
    real = MediaFileManager.add_deferred

    def remember(self, data_callable, mimetype, coordinates, file_name=None, **kwargs):  # type: ignore[no-untyped-def]
        file_id = real(self, data_callable, mimetype, coordinates, file_name, **kwargs)
        made[file_id] = data_callable  # what Streamlit runs when the button is clicked
        return file_id

    monkeypatch.setattr(MediaFileManager, "add_deferred", remember)
    app, newest = _decisions(tmp_path, monkeypatch)
    app.multiselect(key="decisions_model").set_value(["fraud"])
    app.run()
    (button,) = app.get("download_button")
    assert button.proto.label == "Download CSV (5 rows)"
    content = made[button.proto.deferred_file_id]()  # type: ignore[operator]
    rows = list(csv.DictReader(io.StringIO(content.decode())))
    assert [int(r["id"]) for r in rows] == [newest - i for i in range(5)]
    assert rows[0] == {**rows[0], "model": "fraud", "policy": "retrain-on-drift", "policy_version": "1",
                       "status": "proposed", "run_state": "succeeded", "verdict": "pass", "flow_run_id": FLOW_RUN,
                       "created_at": (T0 + timedelta(hours=4)).isoformat()}


def test_the_address_names_the_page_the_model_and_the_decision_shown(tmp_path: Path, monkeypatch):
    config, newest = _history(tmp_path)
    monkeypatch.setenv("MAPE_CONFIG", str(config))
    monkeypatch.delenv("MAPE_DB_URL", raising=False)
    app = AppTest.from_file(str(APP), default_timeout=30)
    app.query_params["page"] = "Decisions"
    app.query_params["decisions_model"] = "credit-risk"
    app.query_params["decision"] = str(newest)  # not among those listed: shown all the same
    app.run()
    sign_in(app, "vic")
    assert app.title[0].value == "Decisions" and _listed(app) == [1]
    assert f"Decision {newest}: retrain on fraud" in [s.value for s in app.subheader]


def test_the_audit_trail_is_verified_and_an_altered_event_is_named(tmp_path: Path, monkeypatch):
    app, _ = _decisions(tmp_path, monkeypatch)
    assert "Audit trail intact: all" in app.success[0].value
    (events,) = [d.value for d in app.dataframe if "kind" in d.value.columns]
    assert list(events["kind"])[0] == "decision.approved"
    engine = create_engine_for(f"sqlite:///{tmp_path / 'mape.db'}")
    with engine.begin() as conn:
        altered = conn.execute(text("SELECT min(id) FROM audit_event")).scalar_one()
        conn.execute(text("UPDATE audit_event SET actor = 'mallory' WHERE id = :id"), {"id": altered})
    engine.dispose()
    next(b for b in app.button if b.label == "Verify the whole chain again").click()
    app.run()
    assert app.error[0].value.startswith(f"The audit trail was altered at event {altered}: its content does not "
                                         "match its hash (altered)")


def test_an_empty_knowledge_base_says_what_is_missing(tmp_path: Path, monkeypatch):
    config = knowledge_base(tmp_path)
    engine = create_engine_for(f"sqlite:///{tmp_path / 'mape.db'}")
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM decision"))
        conn.execute(text("DELETE FROM audit_event"))
    engine.dispose()
    app = open_page(sign_in(open_app(config, monkeypatch), "vic"), "Decisions")
    assert [i.value for i in app.info] == [
        "No decision has been made yet: the planner writes one each time a policy fires for a model.",
        "The audit trail is empty: nothing has been recorded yet."]
