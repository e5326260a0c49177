"""The Monitor wires its optional sensors: GPUs (one NVML session), the grid's carbon, Prometheus queries, fairness."""

from __future__ import annotations

from datetime import timedelta

import pytest

from knowledge.database import session_scope
from knowledge.tables import ManagedModel
from mape.config import ModelConfig
from mape.monitor import Monitor
from mape.plan.context import build_context
from tests.monitor.fake_nvml import GiB, FakeGPU, FakeNVML
from tests.monitor.test_monitor_stage_observations import T0, model_config, register, rows_at
from tests.monitor.test_monitor_stage_observations import world as world_files  # noqa: F401 - a fixture


def _uuid(n: int) -> str:
    return f"GPU-0000000{n}-aaaa-bbbb-cccc-dddddddddddd"


def test_each_model_reads_its_own_gpus_and_the_context_has_the_summary(engine, tmp_path,
                                                                      monkeypatch: pytest.MonkeyPatch):
    fake = FakeNVML([FakeGPU(uuid=_uuid(0), utilization=90, memory_used=40 * GiB, power_mw=300_000),
                     FakeGPU(uuid=_uuid(1), utilization=10, memory_used=8 * GiB, power_mw=None)]).install(monkeypatch)
    ranker = ModelConfig.model_validate({**model_config("ranker", str(tmp_path / "none"), str(tmp_path / "x.csv"))
                                         .model_dump(), "gpu": {"devices": [_uuid(0)]}})
    both = ModelConfig.model_validate({**model_config("both", str(tmp_path / "none"), str(tmp_path / "x.csv"))
                                       .model_dump(), "gpu": {}})
    at = T0 + timedelta(hours=1)
    with session_scope(engine) as session:
        ids = {"ranker": register(session, "ranker"), "both": register(session, "both")}
        report = Monitor([ranker, both]).run(session, ids, at)
    with session_scope(engine) as session:
        gpu = {name: {o.metric: o.value for o in rows_at(session, at, ids[name]) if o.sensor == "gpu" and not o.labels}
               for name in ids}
        context = build_context(session, session.get(ManagedModel, ids["ranker"]), at)
    assert gpu["ranker"]["gpu.utilization"] == pytest.approx(0.9)
    assert gpu["ranker"]["gpu.power_watts"] == pytest.approx(300.0)
    assert gpu["both"]["gpu.utilization"] == pytest.approx(0.5) and gpu["both"]["gpu.devices"] == 2
    assert context["gpu"]["utilization"] == pytest.approx(0.9)
    assert not any(key.startswith("device.") for key in context["gpu"])  # per-device rows stay out of the context
    assert fake.calls["nvmlInit"] == 1  # one NVML session for the fleet
    assert not [e for e in report.errors if e.sensor == "gpu"]


def test_the_grid_intensity_is_read_once_a_tick_and_written_for_every_model(engine, tmp_path):
    from examples.carbon import DIURNAL_GRID
    from mape.config import CarbonConfig

    carbon = CarbonConfig(provider="series", path=DIURNAL_GRID, horizon="12h")
    configs = [model_config(name, str(tmp_path / "none"), str(tmp_path / "x.csv")) for name in ("a", "b")]
    at = T0 + timedelta(hours=13)
    with session_scope(engine) as session:
        ids = {name: register(session, name) for name in ("a", "b")}
        report = Monitor(configs, carbon=carbon).run(session, ids, at)
        contexts = {name: build_context(session, session.get(ManagedModel, ids[name]), at) for name in ids}
    assert not [e for e in report.errors if e.sensor == "carbon"]
    assert contexts["a"]["carbon"] == contexts["b"]["carbon"]
    values = contexts["a"]["carbon"]
    assert 0 < values["forecast_min"] <= values["intensity"] and 0 <= values["forecast_min_in_seconds"] <= 12 * 3600


def test_an_unreachable_prometheus_is_a_stage_error_per_model_and_the_tick_goes_on(engine, tmp_path):
    import socket

    from mape.config import PrometheusConfig

    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    prometheus = PrometheusConfig(url=f"http://127.0.0.1:{port}",
                                  queries={"serving.error_rate": 'sum(rate(errors_total{model="{model}"}[5m]))'},
                                  timeout="2s")
    configs = [model_config(name, str(tmp_path / "none"), str(tmp_path / "x.csv")) for name in ("a", "b")]
    at = T0 + timedelta(hours=1)
    with session_scope(engine) as session:
        ids = {name: register(session, name) for name in ("a", "b")}
        report = Monitor(configs, prometheus=prometheus).run(session, ids, at)
        written = [o for name in ids for o in rows_at(session, at, ids[name]) if o.sensor == "prometheus"]
    failed = [e for e in report.errors if e.sensor == "prometheus"]
    assert sorted(e.model for e in failed) == ["a", "b"]
    assert all("serving.error_rate" in e.message for e in failed)
    assert written == []


def test_fairness_compares_the_groups_of_a_protected_column_of_the_log(engine, world_files):
    path, _ = world_files
    config = ModelConfig.model_validate({**model_config("churn", str(path / "log"), str(path / "labels.csv"))
                                         .model_dump(), "fairness": {"sensitive": ["c1"], "window": "1d",
                                                                     "n_bootstrap": 50}})
    at = T0 + timedelta(hours=10)
    with session_scope(engine) as session:
        model_id = register(session, "churn")
        report = Monitor([config]).run(session, {"churn": model_id}, at)
        context = build_context(session, session.get(ManagedModel, model_id), at)
        groups = {o.labels["group"] for o in rows_at(session, at, model_id)
                  if o.metric == "fairness.group.size"}
    assert not [e for e in report.errors if e.sensor == "fairness"]
    fairness = context["fairness"]
    assert groups == {"a", "b", "c"} and fairness["n_groups"] == 3
    # predictions are right 80 % of the time for every group: the gaps are small, and bounded above
    assert 0 <= fairness["demographic_parity_difference"] <= fairness["demographic_parity_difference_upper"] < 0.15
    assert fairness["smallest_group"] > 400
