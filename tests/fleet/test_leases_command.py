"""``mape leases`` shows the live controllers and each model's lease."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import yaml
from typer.testing import CliRunner

from knowledge import leases, registry
from knowledge.database import create_engine_for, session_scope
from knowledge.migrate import upgrade
from mape.cli import app


def test_it_lists_holders_and_free_models(tmp_path):
    url = f"sqlite:///{tmp_path / 'kb.db'}"
    upgrade(url)
    engine = create_engine_for(url)
    with session_scope(engine) as session:
        ids = [registry.upsert_model(session, name=name).id for name in ("a-model", "b-model")]
    now = datetime.now(timezone.utc)
    leases.balance(engine, "ctl-1", ids[:1], now=now, duration=timedelta(seconds=60))
    with session_scope(engine) as session:  # a lease row nobody holds
        leases._insert_missing(session, ids[1:])
    engine.dispose()
    config = tmp_path / "mape.yaml"
    config.write_text(yaml.safe_dump({"db_url": url, "leases": {"enabled": True}}))
    result = CliRunner().invoke(app, ["leases", "--config", str(config), "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["enabled"] is True and shown["controllers"] == ["ctl-1"]
    assert [(r["model"], r["holder"], r["epoch"]) for r in shown["leases"]] == [
        ("a-model", "ctl-1", 1), ("b-model", None, 0)]
    assert 55 < shown["leases"][0]["expires_in_s"] <= 60
    table = CliRunner().invoke(app, ["leases", "--config", str(config)])
    assert table.exit_code == 0 and "live controllers: ctl-1" in table.output and "b-model  free" in table.output
