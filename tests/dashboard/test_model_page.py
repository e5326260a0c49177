"""The Model page: charts with policy thresholds and decision markers, the version history with the gate's numbers."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df

from knowledge import queries, registry
from knowledge.database import create_engine_for, session_scope
from knowledge.tables import ActionRun, Decision, observation_row
from tests.dashboard.app_harness import knowledge_base, open_app, open_page, sign_in

POLICY = """\
apiVersion: mape/v1
kind: Policy
metadata: {name: drift-guard}
spec:
  selector: {models: ["credit-*"]}
  when: "has(drift.share_drifted) && drift.share_drifted > 0.3 && performance.accuracy_drop >= 0.04"
  action: {type: retrain, params: {window: 4h}}
"""
OTHER_MODEL_POLICY = POLICY.replace("drift-guard", "fraud-only").replace("credit-*", "fraud").replace("0.3", "0.7")


def _history(tmp_path: Path, *, policies: str | None = POLICY) -> Path:
    """Three weeks of hourly observations of every family, two decisions with runs, and versions 2 and 3."""
    config = knowledge_base(tmp_path)
    directory = tmp_path / "policies"
    directory.mkdir()
    if policies is not None:
        (directory / "drift-guard.yaml").write_text(policies)
        (directory / "fraud-only.yaml").write_text(OTHER_MODEL_POLICY)
    settings = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**settings, "policies_dir": "policies"}))
    now = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    engine = create_engine_for(f"sqlite:///{tmp_path / 'mape.db'}")
    with session_scope(engine) as session:
        model = registry.get_model(session, "credit-risk")
        rows = []
        for hour in range(21 * 24):
            at, x = now - timedelta(hours=hour), hour / (21 * 24)

            def row(metric: str, value: float, **labels: Any) -> dict[str, Any]:
                return observation_row(time=at, model_id=model.id, sensor=metric.split(".")[0], metric=metric,  # noqa: B023
                                       value=value, labels=labels)
            rows += [row("drift.share_drifted", 0.5 * x), row("performance.accuracy", 0.9 - 0.1 * x),
                     row("performance.accuracy_drop", 0.1 * x), row("gpu.utilization", 0.5),
                     row("carbon.intensity", 200 + 50 * x)]
            rows += [row("drift.feature.effect_size", x * rank, feature=f"f{rank}", test="ks", effect="wasserstein")
                     for rank in range(8)]
            rows += [row("fairness.gap.demographic_parity_difference", 0.05, attribute="sex"),
                     row("fairness.gap.demographic_parity_difference.ci_low", 0.02, attribute="sex"),
                     row("fairness.gap.demographic_parity_difference.ci_high", 0.08, attribute="sex"),
                     row("fairness.group.selection_rate", 0.4, attribute="sex", group="F"),
                     row("fairness.group.selection_rate", 0.45, attribute="sex", group="M")]
        queries.add_observations(session, rows)
        production = registry.production_version(session, model.id)
        for number, (when, status) in enumerate(((now - timedelta(days=2), "proposed"),
                                                 (now - timedelta(days=1), "proposed"))):
            decision = Decision(model_id=model.id, policy_name="drift-guard", action="retrain", status=status,
                                created_at=when, reason="drift and a drop",
                                evidence={"when": "drift.share_drifted > 0.3",
                                          "context": {"drift": {"share_drifted": 0.42}}},
                                dedup_key=f"{when.isoformat()}/credit-risk/drift-guard")
            session.add(decision)
            session.flush()
            run = ActionRun(decision_id=decision.id, model_id=model.id, action="retrain", state="succeeded",
                            idempotency_key=f"run-{number}", created_at=when, started_at=when,
                            finished_at=when + timedelta(minutes=20), verdict="pass" if number == 0 else None)
            session.add(run)
            session.flush()
            candidate = registry.register_version(session, model_id=model.id, artifact_uri=f"file:///v{number + 2}",
                                                  created_by_action_run_id=run.id)
            gate = {"passed": number == 0, "metric": "accuracy", "candidate": {"accuracy": 0.93 - 0.1 * number},
                    "champion": {"accuracy": 0.88 if number == 0 else 0.93}, "n": 500, "margin": 0.01,
                    "difference": 0.05 - 0.15 * number, "lower_bound": 0.031 - 0.15 * number,
                    "reason": "passed" if number == 0 else "worse than production",
                    "champion_version": production.version}
            if number == 0:
                production = registry.promote(session, candidate, actor="test", evaluation=gate, at=when)
            else:
                registry.reject(session, candidate, actor="test", reason="worse", evaluation=gate, at=when)
    engine.dispose()
    return config


def _model_page(config: Path, monkeypatch, name: str = "vic"):  # type: ignore[no-untyped-def]
    return open_page(sign_in(open_app(config, monkeypatch), name), "Model")


def _specs(app) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    """Each chart's Vega-Lite spec, with any datasets sent beside it as Arrow put back under ``datasets``."""
    specs = []
    for chart in app.get("vega_lite_chart"):
        spec = json.loads(chart.proto.spec)
        spec["datasets"] = {d.name: convert_arrow_bytes_to_pandas_df(d.data.data).to_dict("records")
                            for d in chart.proto.datasets}
        specs.append(spec)
    return specs


def _layer_data(spec: dict[str, Any], mark: str) -> list[list[dict[str, Any]]]:
    """The rows of every layer drawn with ``mark``."""
    found = []
    for layer in spec["layer"]:
        kind = layer["mark"]["type"] if isinstance(layer["mark"], dict) else layer["mark"]
        if kind == mark:
            data = layer["data"]
            found.append(data["values"] if "values" in data else spec["datasets"][data["name"]])
    return found


def test_every_family_is_charted_with_its_policy_thresholds_and_the_decisions_marked(tmp_path: Path, monkeypatch):
    app = _model_page(_history(tmp_path), monkeypatch)
    titles = [s.value for s in app.subheader]
    assert titles[:7] == ["Drift (overall)", "Drift per feature: the 5 with the largest effect size", "Performance",
                          "Fairness: demographic_parity_difference by attribute, with confidence bands",
                          "Fairness per group: selection_rate", "GPU", "Carbon intensity"]
    specs = _specs(app)
    assert len(specs) == 7
    drift, features, performance = specs[0], specs[1], specs[2]
    rules = [row for rows in _layer_data(drift, "rule") for row in rows if "term" in row]
    assert [(r["value"], r["policy"], r["term"]) for r in rules] == \
        [(0.3, "drift-guard", "drift.share_drifted > 0.3")]  # fraud-only selects another model: not drawn
    assert [(r["value"], r["label"]) for rows in _layer_data(performance, "rule") for r in rows if "term" in r] == \
        [(0.04, "performance.accuracy_drop >= 0.04")]
    marks = [row for rows in _layer_data(drift, "rule") for row in rows if "what" in row]
    assert sorted(m["what"] for m in marks) == ["action run 1 (decision 2)", "action run 2 (decision 3)",
                                                 "decision 1", "decision 2", "decision 3"]  # 1: the harness's
    decision = next(m for m in marks if m["what"] == "decision 2")
    assert (decision["policy"], decision["outcome"], decision["evidence"]) == \
        ("drift-guard", "proposed", "drift.share_drifted = 0.42")
    assert decision["detail"] == "run 1: succeeded, verdict pass"
    lines = _layer_data(features, "line")[0]
    assert sorted({row["series"] for row in lines}) == ["f3", "f4", "f5", "f6", "f7"]  # the top 5 of 8
    assert all(len([r for r in lines if r["series"] == s]) <= 500 for s in ("f3", "f7"))
    band = _layer_data(specs[3], "area")[0]
    assert {(row["low"], row["high"]) for row in band} == {(0.02, 0.08)}


def test_the_version_table_shows_lineage_and_the_gate_numbers(tmp_path: Path, monkeypatch):
    app = _model_page(_history(tmp_path), monkeypatch)
    table = app.dataframe[0].value
    assert list(table["version"]) == [3, 2, 1]
    assert list(table["stage"]) == ["rejected", "production", "archived"]
    promoted, rejected = table.iloc[1], table.iloc[0]
    assert (promoted["gate"], promoted["challenger"], promoted["champion"], promoted["champion version"]) == \
        ("passed", 0.93, 0.88, 1)
    assert (rejected["gate"], rejected["challenger"], rejected["champion"], rejected["gate reason"]) == \
        ("failed", pytest.approx(0.83), 0.93, "worse than production")
    assert promoted["parent"] == 1 and promoted["made by"] == "run 1 (drift-guard, decision 2)"
    dot = app.get("graphviz_chart")[0].proto.spec
    assert "v1 -> v2" in dot and "v2 -> v3" in dot and "accuracy 0.930 vs 0.880" in dot


def test_the_address_preselects_the_model_and_an_unknown_one_is_named(tmp_path: Path, monkeypatch):
    config = _history(tmp_path)
    engine = create_engine_for(f"sqlite:///{tmp_path / 'mape.db'}")
    with session_scope(engine) as session:
        registry.upsert_model(session, name="fraud")
    engine.dispose()
    app = sign_in(open_app(config, monkeypatch), "vic")
    app.query_params["page"] = "Model"  # a fresh browser session opened at ?page=Model&model=fraud
    app.query_params["model"] = "fraud"
    app.session_state["page"] = "Model"
    app.run()
    assert app.selectbox(key="model_page_model").value == "fraud"
    assert app.query_params["model"] == ["fraud"] or app.query_params["model"] == "fraud"
    text = app.info[0].value
    assert "drift (overall) (written by the drift sensor (drift.*))" in text and "carbon intensity" in text
    assert "No version is registered for this model yet" in app.info[1].value
    assert not app.get("vega_lite_chart")
    app.selectbox(key="model_page_model").set_value("credit-risk")
    app.run()
    assert len(app.get("vega_lite_chart")) == 7


def test_a_model_without_observations_says_what_is_missing(tmp_path: Path, monkeypatch):
    config = knowledge_base(tmp_path)
    config.write_text(yaml.safe_dump({**yaml.safe_load(config.read_text()), "policies_dir": "nowhere"}))
    app = _model_page(config, monkeypatch)
    assert "no policy thresholds drawn" in app.warning[0].value and "no such file or directory" in app.warning[0].value
    missing = app.info[0].value
    for family in ("drift (overall)", "drift per feature", "performance", "fairness gaps", "gpu", "carbon"):
        assert family in missing
    assert list(app.dataframe[0].value["version"]) == [1]


def test_a_longer_range_keeps_at_most_500_points_per_series(tmp_path: Path, monkeypatch):
    app = _model_page(_history(tmp_path), monkeypatch)
    app.get("button_group")[0].set_value("all")
    app.run()
    assert not app.exception, app.exception
    lines = _layer_data(_specs(app)[0], "line")[0]
    share = [row for row in lines if row["series"] == "drift.share_drifted"]
    assert 400 < len(share) <= 500  # 504 hourly observations, downsampled in SQL
