"""A small, real managed system for controller tests: the credit example with its own data and v1."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import yaml

from examples.credit.demo import MODEL, Scenario, bootstrap, write_config
from examples.credit.serving import CreditServing
from mape.config import load_settings
from mape.controller import Controller


@dataclass
class World:
    directory: Path
    config_path: Path
    controller: Controller
    serving: CreditServing
    scenario: Scenario

    def serve_hour(self, tick: int, *, drifted: bool = False) -> None:
        at = self.scenario.at(tick)
        self.serving.serve(f"hour-{tick:04d}", self.serving.requests(at - timedelta(hours=1), drifted=drifted))


def make_world(directory: Path, policies_dir: Path, *, db_url: str | None = None, rows_per_hour: int = 400) -> World:
    directory.mkdir(parents=True, exist_ok=True)
    scenario = Scenario(rows_per_hour=rows_per_hour, history_hours=12)
    config_path = write_config(directory, policies_dir)
    if db_url is not None:
        data = yaml.safe_load(config_path.read_text())
        data["db_url"] = db_url
        config_path.write_text(yaml.safe_dump(data, sort_keys=False))
    controller = Controller(load_settings(config_path))
    serving = CreditServing(directory / "data", controller.engine, MODEL, rows_per_hour=rows_per_hour,
                            seed=scenario.seed)
    bootstrap(serving, controller.engine, Path(controller.settings.artifacts_dir), scenario)
    return World(directory, config_path, controller, serving, scenario)
