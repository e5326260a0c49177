"""``mape workers``: the Prefect work pool whose workers run the action flow runs (:mod:`flows.workers`).

Registered on the main app by :mod:`mape.cli`, whose helpers it uses
(imported inside the command: :mod:`mape.cli` imports this module). The
workers themselves are Prefect's: ``prefect worker start --pool NAME`` on
each machine with mape installed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from mape.cli_options import ConfigOption

workers_app = typer.Typer(help="Action runs on Prefect workers: the work pool and the action flow's deployment.",
                          no_args_is_help=True)


@workers_app.command("deploy")
def deploy_command(
    config: ConfigOption = None,
    pool: Annotated[Optional[str], typer.Option(
        "--pool", help="Work pool name (default: prefect.action_work_pool of the configuration).")] = None,
    path: Annotated[Optional[Path], typer.Option(
        "--path", help="Where the project lies on the workers' machines (default: where it is installed here).")]
    = None,
) -> None:
    """Create the work pool if missing (type process) and register the action flow's deployment in it."""
    from mape.cli import _apply_prefect_settings, _fail, _settings

    settings = _settings(config)
    name = pool or settings.prefect.action_work_pool
    if not name:
        _fail("no work pool: pass --pool NAME or set prefect.action_work_pool in the configuration")
        return
    _apply_prefect_settings(settings)
    from flows.workers import PROJECT_ROOT, deploy, deployment_name

    try:
        deployment = deploy(name, path=path)
    except Exception as exc:  # noqa: BLE001 - an unreachable or refusing Prefect API is the operator's to fix
        _fail(f"could not deploy to work pool {name}: {type(exc).__name__}: {exc}")
        return
    typer.echo(f"deployment {deployment_name(name)} ({deployment}) in work pool {name}, "
               f"project root {path or PROJECT_ROOT}")
    typer.echo(f"start workers with: prefect worker start --pool {name} --type process")
    if settings.prefect.action_work_pool != name:
        typer.echo(f"and set prefect.action_work_pool: {name} for the controllers to hand their actions to it")
