"""Options shared by the command modules (:mod:`mape.cli`, :mod:`mape.cli_people`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

ConfigOption = Annotated[Optional[Path], typer.Option("--config", "-c", help="Configuration file (mape.yaml).")]
UserOption = Annotated[Optional[str], typer.Option(
    "--user", envvar="MAPE_USER", help="Sign in as this user of access.users_file (password: MAPE_PASSWORD or a "
                                       "prompt).")]
LocalActorOption = Annotated[Optional[str], typer.Option(
    "--actor", help="Without a users file: the name recorded as the local operator (default: the login name).")]
