"""The GPU sensor against a fake NVML installed at the real module boundary (``pynvml``'s functions)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

import pynvml
import pytest

from mape.config import GPUSensorConfig
from mape.errors import InvalidParameterError
from mape.monitor.sensors.gpu import SUMMARY_FIELDS, DeviceReading, GPUReport, GPUSensor, gpu_observations
from mape.plan.fields import CONTEXT_FIELDS
from tests.monitor.fake_nvml import GiB, FakeGPU, FakeMIG, FakeNVML

AT = datetime(2026, 1, 5, 12, tzinfo=timezone.utc)
LOGGER = "mape.monitor.sensors.gpu"


def _gpu(n: int, **kwargs) -> FakeGPU:  # type: ignore[no-untyped-def]
    return FakeGPU(uuid=f"GPU-0000000{n}-aaaa-bbbb-cccc-dddddddddddd", **kwargs)


def _records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER]


def test_two_devices_are_read_in_nvml_units_and_aggregated(monkeypatch: pytest.MonkeyPatch):
    fake = FakeNVML([
        _gpu(1, utilization=30, memory_used=20 * GiB, power_mw=100_000, energy_mj=5_000_000, temperature=40),
        _gpu(2, utilization=50, memory_used=40 * GiB, power_mw=250_500, energy_mj=7_000_000, temperature=61),
    ]).install(monkeypatch)

    report = GPUSensor().read()

    assert report.available and report.errors == ()
    first, second = report.readings
    assert first == DeviceReading(device=_gpu(1).uuid, mig=False, utilization=0.3, memory_used_bytes=20 * GiB,
                                  memory_total_bytes=80 * GiB, power_watts=100.0, energy_joules=5000.0,
                                  temperature_c=40.0)
    assert second.power_watts == 250.5 and second.utilization == 0.5
    assert report.summary() == {
        "utilization": pytest.approx(0.4), "memory_used_fraction": 60 / 160, "memory_used_bytes": 60 * GiB,
        "memory_total_bytes": 160 * GiB, "power_watts": 350.5, "energy_joules": 12000.0, "temperature_c": 61.0,
        "devices": 2,
    }
    assert fake.calls["nvmlInit"] == 1


def test_a_field_nvml_does_not_support_is_unknown_and_the_rest_is_read(monkeypatch: pytest.MonkeyPatch):
    FakeNVML([_gpu(1, utilization=0, memory_used=8 * GiB, power_mw=None, energy_mj=None,
                   no_permission=frozenset({"temperature"}))]).install(monkeypatch)

    report = GPUSensor().read()

    (reading,) = report.readings
    assert (reading.power_watts, reading.energy_joules, reading.temperature_c) == (None, None, None)
    assert reading.utilization == 0.0 and reading.memory_used_bytes == 8 * GiB  # an idle GPU reads 0: known
    assert report.power_watts is None and report.energy_joules is None and report.temperature_c is None
    assert report.utilization == 0.0 and report.memory_used_fraction == 0.1
    assert report.errors == ()  # not supported and not permitted are not errors


def test_a_mig_instance_has_memory_but_no_utilization_power_or_temperature(monkeypatch: pytest.MonkeyPatch):
    instance = FakeMIG(uuid="MIG-11111111-2222-3333-4444-555555555555", memory_total=20 * GiB, memory_used=5 * GiB)
    gpu = _gpu(1, utilization=90, power_mw=300_000, mig=[instance, FakeMIG(uuid="MIG-other", memory_used=GiB)])
    FakeNVML([gpu]).install(monkeypatch)
    sensor = GPUSensor(devices=[instance.uuid])

    report = sensor.read()

    assert report.readings == (DeviceReading(device=instance.uuid, mig=True, memory_used_bytes=5 * GiB,
                                             memory_total_bytes=20 * GiB),)
    assert report.utilization is None and report.memory_used_fraction == 0.25 and report.devices == 1
    # The GPU in MIG mode, read whole: power and its instances' memory, but no utilization either.
    (whole,) = sensor.read([]).readings
    assert (whole.mig, whole.utilization, whole.power_watts, whole.memory_used_bytes) == (False, None, 300.0, 6 * GiB)


def test_a_machine_without_a_driver_is_unavailable_logged_once_and_retried_after_the_interval(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, clock):  # type: ignore[no-untyped-def]
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    fake = FakeNVML([_gpu(1, utilization=20)], driver=False).install(monkeypatch)
    sensor = GPUSensor(retry_unavailable_after=timedelta(minutes=10), clock=clock)

    reports = []
    for _ in range(3):
        reports.append(sensor.read())
        clock.advance(timedelta(minutes=1))

    assert all(not r.available and r.reason == "NVML cannot start: NVML Shared Library Not Found" for r in reports)
    assert reports[0].readings == () and reports[0].devices is None and reports[0].summary()["utilization"] is None
    assert fake.calls["nvmlInit"] == 1
    (line,) = _records(caplog)
    assert line.levelno == logging.INFO and "GPU sensor is unavailable" in line.getMessage()
    assert "tries again in 10m" in line.getMessage()

    clock.advance(timedelta(minutes=7))  # 10 minutes after the failure: tried again, same reason, not logged again
    assert not sensor.read().available
    assert fake.calls["nvmlInit"] == 2 and len(_records(caplog)) == 1

    fake.driver = True  # the driver is installed; the sensor notices at the next retry, not before
    clock.advance(timedelta(minutes=9))
    assert not sensor.read().available and fake.calls["nvmlInit"] == 2
    clock.advance(timedelta(minutes=1))
    report = sensor.read()
    assert report.available and report.utilization == 0.2 and fake.calls["nvmlInit"] == 3
    assert "available again" in _records(caplog)[-1].getMessage()
    sensor.close()
    assert fake.refcount == 0


def test_without_the_package_the_sensor_is_unavailable(monkeypatch: pytest.MonkeyPatch):
    import mape.monitor.sensors.gpu as gpu_module

    monkeypatch.setattr(gpu_module, "pynvml", None)

    report = GPUSensor().read()

    assert not report.available and "cannot be imported" in (report.reason or "")
    assert gpu_observations(1, AT, report) == []


def test_devices_are_selected_by_uuid_or_index_each_read_once(monkeypatch: pytest.MonkeyPatch,
                                                              caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    gpus = [_gpu(n, utilization=10 * n) for n in (1, 2, 3)]
    FakeNVML(gpus).install(monkeypatch)
    sensor = GPUSensor(devices=[gpus[1].uuid, "2", "0", gpus[0].uuid, "GPU-not-here"])

    first, second = sensor.read(), sensor.read()

    assert [r.device for r in first.readings] == [gpus[1].uuid, gpus[2].uuid, gpus[0].uuid]
    assert first.utilization == pytest.approx(0.2) and first.devices == 3
    assert first.errors == ("GPU device GPU-not-here is not on this machine.",) == second.errors
    assert [r.getMessage() for r in _records(caplog)] == ["GPU device GPU-not-here is not on this machine."]
    assert [r.device for r in sensor.read(["1"]).readings] == [gpus[1].uuid]
    assert sensor.read(["7"]).errors == ("GPU device 7 is not on this machine.",)


def test_observations_are_written_for_known_values_only(monkeypatch: pytest.MonkeyPatch):
    instance = FakeMIG(uuid="MIG-11111111-2222-3333-4444-555555555555", memory_used=GiB)
    gpus = [_gpu(1, utilization=0, power_mw=None, energy_mj=None, temperature=None, memory_used=0),
            _gpu(2, mig=[instance])]
    FakeNVML(gpus).install(monkeypatch)

    report = GPUSensor(devices=[gpus[0].uuid, instance.uuid]).read()
    rows = gpu_observations(7, AT, report)

    summary = {r.metric: r.value for r in rows if not r.labels}
    assert summary == {"gpu.utilization": 0.0, "gpu.memory_used_fraction": GiB / (90 * GiB),
                       "gpu.memory_used_bytes": float(GiB), "gpu.memory_total_bytes": float(90 * GiB),
                       "gpu.devices": 2.0}
    per_device = {(r.labels["device"], r.metric) for r in rows if r.labels}
    assert per_device == {
        *((gpus[0].uuid, f"gpu.device.{name}") for name in ("utilization", "memory_used_fraction",
                                                            "memory_used_bytes", "memory_total_bytes")),
        *((instance.uuid, f"gpu.device.{name}") for name in ("memory_used_fraction", "memory_used_bytes",
                                                             "memory_total_bytes")),
    }
    assert all(r.value is not None and r.sensor == "gpu" and r.model_id == 7 and r.time == AT for r in rows)
    assert all(r.labels in ({}, {"device": gpus[0].uuid}, {"device": instance.uuid}) for r in rows)


def test_an_unavailable_report_writes_nothing_and_an_empty_selection_writes_only_the_count():
    assert gpu_observations(1, AT, GPUReport(available=False, reason="no driver")) == []
    rows = gpu_observations(1, AT, GPUReport(available=True, errors=("GPU device 3 is not on this machine.",)))
    assert [(r.metric, r.value) for r in rows] == [("gpu.devices", 0.0)]


def test_old_drivers_fall_back_to_version_1_memory_and_the_older_temperature_call(monkeypatch: pytest.MonkeyPatch):
    FakeNVML([_gpu(1, memory_used=4 * GiB, memory_reserved=GiB, temperature=50)],
             memory_v2=False, temperature_v=False).install(monkeypatch)

    (reading,) = GPUSensor().read().readings

    assert reading.memory_used_bytes == 5 * GiB  # version 1 counts the driver's reservation as used
    assert reading.temperature_c == 50.0


def test_a_lost_gpu_is_an_error_of_that_device_and_a_lost_driver_makes_the_sensor_unavailable(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, clock):  # type: ignore[no-untyped-def]
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    gpus = [_gpu(1, utilization=40), _gpu(2, lost=True)]
    fake = FakeNVML(gpus).install(monkeypatch)
    sensor = GPUSensor(clock=clock)

    report = sensor.read()
    assert [r.device for r in report.readings] == [gpus[0].uuid]
    assert report.errors == ("GPU device 1 cannot be opened: GPU is lost.",)

    fake.refcount, fake.driver = 0, False  # the driver is unloaded under the running sensor
    lost = sensor.read()
    assert not lost.available and lost.reason == "NVML stopped working: Uninitialized"
    assert _records(caplog)[-1].levelno == logging.WARNING
    assert not sensor.read().available and fake.calls["nvmlInit"] == 1


def test_close_shuts_nvml_down_and_a_later_read_starts_it_again(monkeypatch: pytest.MonkeyPatch):
    fake = FakeNVML([_gpu(1)]).install(monkeypatch)

    with GPUSensor() as sensor:
        sensor.read()
        sensor.read()
        assert fake.refcount == 1
    assert fake.refcount == 0 and fake.calls["nvmlShutdown"] == 1
    sensor.close()  # a second close does nothing
    assert fake.calls["nvmlShutdown"] == 1
    assert sensor.read().available and fake.refcount == 1
    sensor.close()


def test_the_sensor_is_built_from_its_configuration(clock):  # type: ignore[no-untyped-def]
    config = GPUSensorConfig(devices=["0", "MIG-11111111-2222-3333-4444-555555555555"], retry_unavailable_after="30s")

    sensor = GPUSensor.from_config(config, clock=clock)

    assert sensor.devices == ("0", "MIG-11111111-2222-3333-4444-555555555555")
    assert sensor.retry_unavailable_after == timedelta(seconds=30) and sensor.clock is clock
    assert GPUSensorConfig().devices == [] and GPUSensorConfig().retry_unavailable_after == timedelta(minutes=10)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"devices": ["cuda:0"]}, "The 'devices' parameter of GPUSensor must be NVML indices"),
    ({"retry_unavailable_after": timedelta(seconds=-1)},
     "The 'retry_unavailable_after' parameter of GPUSensor must be a timedelta of at least 0"),
    ({"retry_unavailable_after": 600}, "Got 600 instead."),
])
def test_bad_parameters_are_refused_at_construction(kwargs, message):  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidParameterError, match=message):
        GPUSensor(**kwargs)


def test_bad_devices_given_to_read_are_refused(monkeypatch: pytest.MonkeyPatch):
    FakeNVML([_gpu(1)]).install(monkeypatch)
    with pytest.raises(InvalidParameterError, match=r"Got \['gpu1'\] instead"):
        GPUSensor().read(["gpu1"])


def test_every_summary_field_is_a_declared_context_field():
    assert set(SUMMARY_FIELDS) == CONTEXT_FIELDS["gpu"].fields


def test_the_fake_raises_the_real_library_errors():
    assert pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED).__class__ is pynvml.NVMLError_NotSupported
    assert str(pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)) == "NVML Shared Library Not Found"


@pytest.mark.gpu
def test_real_gpus_read_in_sane_ranges():
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        pytest.skip(f"NVML does not start here: {exc}")
    pynvml.nvmlShutdown()

    with GPUSensor() as sensor:
        report = sensor.read()

    assert report.available and report.devices and report.devices >= 1, report
    for reading in report.readings:
        assert reading.device.startswith(("GPU-", "MIG-")), reading
        if reading.utilization is not None:
            assert 0.0 <= reading.utilization <= 1.0, reading
        if reading.memory_used_bytes is not None and reading.memory_total_bytes is not None:
            assert 0 <= reading.memory_used_bytes <= reading.memory_total_bytes, reading
        if reading.power_watts is not None:
            assert 0.0 < reading.power_watts < 5000.0, reading
        if reading.temperature_c is not None:
            assert 0.0 < reading.temperature_c < 120.0, reading
        if reading.energy_joules is not None:
            assert reading.energy_joules >= 0.0, reading
    assert all(value is not None for value in (report.memory_used_fraction, report.memory_total_bytes))
