"""``mape models show`` tells how a version's canary went: its steps, their verdicts, the outcome."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from typer.testing import CliRunner

from examples.credit.demo import write_config
from knowledge import registry
from knowledge.database import create_engine_for, session_scope
from knowledge.migrate import upgrade
from mape.cli import app

REPO = Path(__file__).resolve().parents[2]


def test_models_show_prints_the_canary_steps_of_a_version(tmp_path: Path):
    config = write_config(tmp_path, REPO / "policies")
    url = f"sqlite:///{tmp_path / 'mape.db'}"
    upgrade(url)
    engine = create_engine_for(url)
    t0 = datetime(2026, 3, 2, tzinfo=timezone.utc)
    with session_scope(engine) as session:
        model = registry.upsert_model(session, name="credit-risk")
        v1 = registry.register_version(session, model_id=model.id, artifact_uri="file:///v1")
        registry.promote(session, v1, actor="test", at=t0)
        v2 = registry.register_version(session, model_id=model.id, artifact_uri="file:///v2")
        registry.start_canary(session, v2, actor="engine", reason="gate passed", at=t0)
        history = [{"step": 1, "share": 0.1, "verdict": "pass"}, {"step": 2, "share": 0.5, "verdict": "fail"}]
        registry.reject(session, v2, actor="engine", reason="canary 1: step 2 (50%) ended fail at verification",
                        evaluation={"reason": "candidate accuracy 0.93 vs 0.90", "canary": {
                            "id": 1, "history": history, "outcome": "aborted",
                            "reason": "step 2 (50%) ended fail at verification"}})
    engine.dispose()
    text = CliRunner().invoke(app, ["models", "show", "credit-risk", "--config", str(config)]).output
    assert "v2 rejected: file:///v2" in text
    assert "    canary: aborted (steps: 10% pass, 50% fail): step 2 (50%) ended fail at verification" in text
