"""``mape leases``: which controller acts for which model, when several share a fleet (:mod:`knowledge.leases`).

Registered on the main app by :mod:`mape.cli`, whose helpers it uses
(imported inside the command: :mod:`mape.cli` imports this module).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Annotated

import typer

from mape.cli_options import ConfigOption


def leases_command(config: ConfigOption = None,
                   as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
                   ) -> None:
    """The live controllers and each model's lease: holder, epoch and time left (read-only)."""
    from mape.cli import _settings
    from knowledge import leases, queries
    from knowledge.database import create_engine_for, session_scope
    from knowledge.migrate import upgrade

    settings = _settings(config)
    upgrade(settings.db_url)
    engine = create_engine_for(settings.db_url)
    now = datetime.now(timezone.utc)
    try:
        with session_scope(engine) as session:
            names = {m.id: m.name for m in queries.models_by_name(session).values()}
            live = leases.members(session, now)
            rows = [{"model": names.get(row.model_id, str(row.model_id)),
                     "holder": row.holder if row.holder and row.expires_at > now else None,
                     "epoch": row.epoch,
                     "expires_in_s": round((row.expires_at - now).total_seconds(), 1) if row.holder else None}
                    for row in leases.leases(session)]
    finally:
        engine.dispose()
    if as_json:
        typer.echo(json.dumps({"enabled": settings.leases.enabled, "controllers": live, "leases": rows}, indent=2))
        return
    typer.echo(f"leases {'on' if settings.leases.enabled else 'off'}; live controllers: {', '.join(live) or 'none'}")
    if not rows:
        typer.echo("no model has a lease yet")
        return
    width = max(len(r["model"]) for r in rows)
    for r in rows:
        held = f"{r['holder']} (epoch {r['epoch']}, {r['expires_in_s']:.0f}s left)" if r["holder"] else "free"
        typer.echo(f"{r['model']:<{width}}  {held}")
