"""GPU load of the devices that serve or train a model, read with NVML (nvidia-ml-py, import name ``pynvml``).

Who calls it: the Monitor stage, every tick, for models with a GPU sensor
configured (:class:`mape.config.GPUSensorConfig`); :func:`gpu_observations`
turns the report into the ``gpu.*`` observations that policies read (e.g. the
shipped ``scale-up-on-gpu-load`` and ``scale-down-when-gpu-idle``).

Per device the sensor reads, with NVML's units converted:

- ``utilization``: share of the last sample period in which a kernel ran,
  0 to 1 (NVML: percent);
- ``memory_used_bytes`` and ``memory_total_bytes``
  (``nvmlDeviceGetMemoryInfo`` version 2 where the binding and driver have
  it, else version 1; version 2 does not count memory the driver reserves as
  used);
- ``power_watts`` (NVML: milliwatts);
- ``energy_joules``: a counter since the driver was loaded (NVML: millijoules;
  Volta and newer); take differences, not values;
- ``temperature_c``: the GPU die, degrees Celsius.

Which devices: NVML indices (``"0"``, nvidia-smi's numbering, which is not
CUDA's default order: prefer UUIDs), GPU UUIDs (``"GPU-..."``) or MIG
instance UUIDs (``"MIG-..."``); none means every GPU of the machine, whole
GPUs only (a GPU in MIG mode is read as one device, not as its instances,
so its memory is not counted twice). A device named twice (by index and by
UUID) is read once; a GPU and one of its own MIG instances both named are
both read, so name one or the other.

**Unknown is not zero.** A field NVML does not support on a device
(``NVMLError_NotSupported``), may not read (``NoPermission``) or does not
have in the installed driver (``FunctionNotFound``) is ``None`` and is not
written. In particular NVML gives no utilization for MIG instances (nor for a
GPU in MIG mode), and no power, energy or temperature for MIG instances: a
GPU's power cannot be split between its instances. Per-instance activity
would need NVML's GPM metrics (Hopper and newer, two samples per reading),
which this sensor does not read. Any other NVML error on a field also makes
it unknown and is listed in :attr:`GPUReport.errors`.

**No driver is not a failure.** When ``import pynvml`` fails or ``nvmlInit``
raises (no library, driver not loaded, version mismatch), the sensor logs one
line, reports ``GPUReport(available=False, reason=...)`` and writes nothing;
it calls ``nvmlInit`` again only after ``retry_unavailable_after`` (10
minutes by default), and logs again only if the reason changes or the GPUs
come back. Losing the driver while running is handled the same way.

Summary of a report (the context fields ``gpu.<field>``, declared in
:mod:`mape.plan.fields`): ``utilization`` is the mean of the known
utilizations; ``memory_used_bytes`` and ``memory_total_bytes`` are sums over
the devices where both are known, and ``memory_used_fraction`` their ratio;
``power_watts`` and ``energy_joules`` are sums of the known values;
``temperature_c`` is the hottest known; ``devices`` counts the devices read.
A summary field with no known value is ``None``, never 0.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Self, TypeVar

from knowledge.tables import Observation
from mape._util.timeutil import Clock, format_duration, utcnow
from mape.config import GPUSensorConfig
from mape.errors import InvalidParameterError

try:
    import pynvml
except ImportError:  # pragma: no cover - nvidia-ml-py is a dependency; a broken install reads as "unavailable"
    pynvml = None  # type: ignore[assignment]

__all__ = ["DeviceReading", "GPUReport", "GPUSensor", "SUMMARY_FIELDS", "gpu_observations"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

#: The summary fields of a report: the ``gpu.<field>`` observations and context fields.
SUMMARY_FIELDS: tuple[str, ...] = ("utilization", "memory_used_fraction", "memory_used_bytes", "memory_total_bytes",
                                   "power_watts", "energy_joules", "temperature_c", "devices")

# The same pattern as GPUSensorConfig.devices: an NVML index, a GPU UUID or a MIG UUID.
_DEVICE = re.compile(r"\d+|(?:GPU|MIG)-\S+")


def _error_class(name: str) -> type[BaseException] | None:
    return None if pynvml is None else getattr(pynvml, name, None)


def _error_classes(*names: str) -> tuple[type[BaseException], ...]:
    return tuple(cls for cls in map(_error_class, names) if cls is not None)


# A field NVML cannot give on this device or driver: unknown, silently.
_UNKNOWN = _error_classes("NVMLError_NotSupported", "NVMLError_NoPermission", "NVMLError_FunctionNotFound")
# NVML itself is gone (driver unloaded or upgraded under us): the sensor becomes unavailable.
_LOST = _error_classes("NVMLError_Uninitialized", "NVMLError_DriverNotLoaded", "NVMLError_LibraryNotFound",
                       "NVMLError_LibRmVersionMismatch")
# A named device that is not there.
_MISSING = _error_classes("NVMLError_NotFound", "NVMLError_InvalidArgument")


@dataclass(frozen=True)
class DeviceReading:
    """One GPU or MIG instance at one moment; ``None`` is unknown (not supported or not readable), never 0.

    Attributes
    ----------
    device : str
        The UUID (``GPU-...`` or ``MIG-...``), or the configured name when NVML gives no UUID.
    mig : bool
        Whether the device is a MIG instance.
    utilization : float or None
        Share of time a kernel ran, 0 to 1; ``None`` on MIG instances and GPUs in MIG mode.
    memory_used_bytes, memory_total_bytes : int or None
    power_watts : float or None
    energy_joules : float or None
        Counter since the driver was loaded.
    temperature_c : float or None
    """

    device: str
    mig: bool = False
    utilization: float | None = None
    memory_used_bytes: int | None = None
    memory_total_bytes: int | None = None
    power_watts: float | None = None
    energy_joules: float | None = None
    temperature_c: float | None = None

    @property
    def memory_used_fraction(self) -> float | None:
        used, total = self.memory_used_bytes, self.memory_total_bytes
        return None if used is None or not total else used / total

    def values(self) -> dict[str, float | None]:
        """The readings by field name (the ``gpu.device.<field>`` observations)."""
        return {"utilization": self.utilization, "memory_used_fraction": self.memory_used_fraction,
                "memory_used_bytes": self.memory_used_bytes, "memory_total_bytes": self.memory_total_bytes,
                "power_watts": self.power_watts, "energy_joules": self.energy_joules,
                "temperature_c": self.temperature_c}

    def __str__(self) -> str:
        known = {name: value for name, value in self.values().items() if value is not None}
        return f"{self.device}: " + (", ".join(f"{name} {value:g}" for name, value in known.items()) or "nothing known")


@dataclass(frozen=True)
class GPUReport:
    """The devices of one model at one moment, and their summary.

    Attributes
    ----------
    available : bool
        False when NVML cannot be used on this machine (then nothing is known and nothing is written).
    readings : tuple of DeviceReading
        One per device read.
    reason : str or None
        Why the sensor is unavailable.
    errors : tuple of str
        Devices not found and fields that failed with an unexpected NVML error (they are unknown).
    """

    available: bool
    readings: tuple[DeviceReading, ...] = ()
    reason: str | None = None
    errors: tuple[str, ...] = ()

    def _known(self, name: str) -> list[float]:
        return [value for reading in self.readings if (value := getattr(reading, name)) is not None]

    def _both_memory(self) -> list[DeviceReading]:
        return [r for r in self.readings if r.memory_used_bytes is not None and r.memory_total_bytes is not None]

    @property
    def devices(self) -> int | None:
        """How many devices were read (``None`` when the sensor is unavailable)."""
        return len(self.readings) if self.available else None

    @property
    def utilization(self) -> float | None:
        known = self._known("utilization")
        return sum(known) / len(known) if known else None

    @property
    def memory_used_bytes(self) -> int | None:
        both = self._both_memory()
        return sum(r.memory_used_bytes for r in both) if both else None  # type: ignore[misc]

    @property
    def memory_total_bytes(self) -> int | None:
        both = self._both_memory()
        return sum(r.memory_total_bytes for r in both) if both else None  # type: ignore[misc]

    @property
    def memory_used_fraction(self) -> float | None:
        used, total = self.memory_used_bytes, self.memory_total_bytes
        return None if used is None or not total else used / total

    @property
    def power_watts(self) -> float | None:
        known = self._known("power_watts")
        return sum(known) if known else None

    @property
    def energy_joules(self) -> float | None:
        known = self._known("energy_joules")
        return sum(known) if known else None

    @property
    def temperature_c(self) -> float | None:
        known = self._known("temperature_c")
        return max(known) if known else None

    def summary(self) -> dict[str, float | int | None]:
        """The summary fields (:data:`SUMMARY_FIELDS`) by name; ``None`` where nothing is known."""
        return {name: getattr(self, name) for name in SUMMARY_FIELDS}

    def __str__(self) -> str:
        if not self.available:
            return f"GPUs unavailable: {self.reason}"
        known = {name: value for name, value in self.summary().items() if value is not None and name != "devices"}
        text = f"{self.devices} GPU device(s)" + "".join(f", {name} {value:g}" for name, value in known.items())
        return text + (f"; {len(self.errors)} error(s)" if self.errors else "")


class GPUSensor:
    """Reads GPUs and MIG instances with NVML; a machine without a driver reports unavailable, never fails.

    NVML is started at the first :meth:`read` and stopped by :meth:`close`
    (or leaving a ``with`` block). One sensor can serve the whole fleet: pass
    each model's devices to :meth:`read`, so NVML is started once and a
    missing driver is logged once.

    Parameters
    ----------
    devices : sequence of str, default ()
        NVML indices (``"0"``), GPU UUIDs (``"GPU-..."``) or MIG UUIDs
        (``"MIG-..."``) read by :meth:`read` when it is given none; empty:
        every GPU of the machine.
    retry_unavailable_after : timedelta, default 10 minutes
        After NVML failed to start, :meth:`read` reports the sensor
        unavailable without trying again until this much time has passed.
    clock : callable, default :func:`mape._util.timeutil.utcnow`
        The current time (tests step it).

    Examples
    --------
    On a machine without an NVIDIA driver (as here, in the docs build):

    >>> sensor = GPUSensor(devices=["0"])
    >>> report = sensor.read()  # doctest: +SKIP
    >>> report.available, report.reason  # doctest: +SKIP
    (False, 'NVML cannot start: NVML Shared Library Not Found')
    >>> GPUSensor(devices=["gpu0"])  # doctest: +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    ...
    mape.errors.InvalidParameterError: The 'devices' parameter of GPUSensor must be NVML indices ('0'),
    GPU UUIDs ('GPU-...') or MIG UUIDs ('MIG-...'). Got ['gpu0'] instead.
    """

    def __init__(self, *, devices: Sequence[str] = (), retry_unavailable_after: timedelta = timedelta(minutes=10),
                 clock: Clock = utcnow) -> None:
        self.devices = tuple(devices)
        self.retry_unavailable_after = retry_unavailable_after
        self.clock = clock
        _check_devices(self.devices)
        if not isinstance(retry_unavailable_after, timedelta) or retry_unavailable_after < timedelta(0):
            raise InvalidParameterError.for_parameter("retry_unavailable_after", "GPUSensor",
                                                      "a timedelta of at least 0", retry_unavailable_after)
        self._reset()

    def _reset(self) -> None:
        self._started = False
        self._reason: str | None = None  # why NVML is unavailable; None while it is (or may be) usable
        self._retry_at: datetime | None = None
        self._logged: set[str] = set()

    @classmethod
    def from_config(cls, config: GPUSensorConfig, *, clock: Clock = utcnow) -> Self:
        """A sensor for the devices of one model's configuration."""
        return cls(devices=config.devices, retry_unavailable_after=config.retry_unavailable_after, clock=clock)

    # ------------------------------------------------------------------ reading

    def read(self, devices: Sequence[str] | None = None) -> GPUReport:
        """Read ``devices`` (default: the sensor's own) now.

        Never raises for NVML's sake: without NVML the report is unavailable;
        a device that is not there is listed in :attr:`GPUReport.errors`.
        """
        names = self.devices if devices is None else _check_devices(tuple(devices))
        if not self._start():
            return GPUReport(available=False, reason=self._reason)
        errors: list[str] = []
        try:
            targets = self._resolve(names, errors)
        except _LOST as exc:
            self._lose(f"NVML stopped working: {exc}")
            return GPUReport(available=False, reason=self._reason)
        readings = tuple(self._read_device(label, handle, errors) for label, handle in targets)
        for error in errors:
            self._log_once(logging.WARNING, error)
        return GPUReport(available=True, readings=readings, errors=tuple(errors))

    def _resolve(self, names: tuple[str, ...], errors: list[str]) -> list[tuple[str, Any]]:
        """The (label, handle) of each device to read, each device once."""
        if not names:
            names = tuple(str(index) for index in range(pynvml.nvmlDeviceGetCount()))
        targets: dict[str, Any] = {}
        for name in names:
            try:
                handle = (pynvml.nvmlDeviceGetHandleByIndex(int(name)) if name.isdigit()
                          else pynvml.nvmlDeviceGetHandleByUUID(name))
            except _LOST:
                raise
            except _MISSING:
                errors.append(f"GPU device {name} is not on this machine.")
                continue
            except pynvml.NVMLError as exc:
                errors.append(f"GPU device {name} cannot be opened: {exc}.")
                continue
            label = self._field(errors, name, "uuid", lambda: str(pynvml.nvmlDeviceGetUUID(handle))) or name
            targets.setdefault(label, handle)
        return list(targets.items())

    def _read_device(self, label: str, handle: Any, errors: list[str]) -> DeviceReading:
        utilization = self._field(errors, label, "utilization", lambda: pynvml.nvmlDeviceGetUtilizationRates(handle))
        memory = self._field(errors, label, "memory", lambda: _memory_info(handle))
        power_mw = self._field(errors, label, "power", lambda: pynvml.nvmlDeviceGetPowerUsage(handle))
        energy_mj = self._field(errors, label, "energy", lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(handle))
        temperature = self._field(errors, label, "temperature", lambda: _temperature(handle))
        return DeviceReading(
            device=label,
            mig=label.startswith("MIG-"),
            utilization=None if utilization is None else utilization.gpu / 100.0,
            memory_used_bytes=None if memory is None else int(memory.used),
            memory_total_bytes=None if memory is None else int(memory.total),
            power_watts=None if power_mw is None else power_mw / 1000.0,
            energy_joules=None if energy_mj is None else energy_mj / 1000.0,
            temperature_c=None if temperature is None else float(temperature),
        )

    @staticmethod
    def _field(errors: list[str], device: str, name: str, read: Callable[[], _T]) -> _T | None:
        try:
            return read()
        except _UNKNOWN:
            return None
        except pynvml.NVMLError as exc:
            errors.append(f"GPU device {device}: reading {name} failed: {exc}.")
            return None

    # ------------------------------------------------------------------ NVML's lifetime

    def _start(self) -> bool:
        """Start NVML unless it runs or failed less than ``retry_unavailable_after`` ago; whether it runs."""
        if self._started:
            return True
        now = self.clock()
        if self._retry_at is not None and now < self._retry_at:
            return False
        if pynvml is None:
            self._unavailable("the nvidia-ml-py package (pynvml) cannot be imported", now, quiet=True)
            return False
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            no_driver = isinstance(exc, _error_classes("NVMLError_LibraryNotFound", "NVMLError_DriverNotLoaded"))
            self._unavailable(f"NVML cannot start: {exc}", now, quiet=no_driver)
            return False
        self._started = True
        if self._reason is not None:
            logger.info("GPU sensor is available again: NVML started.")
        self._reason, self._retry_at = None, None
        return True

    def _unavailable(self, reason: str, now: datetime, *, quiet: bool) -> None:
        """Remember why NVML is unusable; log it only when the reason is new."""
        if reason != self._reason:
            level = logging.INFO if quiet else logging.WARNING  # no driver on a CPU machine is normal
            logger.log(level, "GPU sensor is unavailable: %s; it tries again in %s.", reason,
                       format_duration(self.retry_unavailable_after))
        self._reason = reason
        self._retry_at = now + self.retry_unavailable_after

    def _lose(self, reason: str) -> None:
        self.close()
        self._unavailable(reason, self.clock(), quiet=False)

    def _log_once(self, level: int, message: str) -> None:
        if message not in self._logged:
            self._logged.add(message)
            logger.log(level, message)

    def close(self) -> None:
        """Stop NVML (``nvmlShutdown``) if this sensor started it; reading again starts it again."""
        if not self._started:
            return
        self._started = False
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError as exc:
            logger.debug("GPU sensor could not shut NVML down: %s", exc)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"GPUSensor(devices={list(self.devices)!r}, "
                f"retry_unavailable_after={format_duration(self.retry_unavailable_after)!r})")


def _check_devices(devices: tuple[str, ...]) -> tuple[str, ...]:
    if not all(isinstance(name, str) and _DEVICE.fullmatch(name) for name in devices):
        raise InvalidParameterError.for_parameter(
            "devices", "GPUSensor", "NVML indices ('0'), GPU UUIDs ('GPU-...') or MIG UUIDs ('MIG-...')",
            list(devices))
    return devices


def _memory_info(handle: Any) -> Any:
    """``nvmlDeviceGetMemoryInfo`` version 2 where binding and driver have it, else version 1."""
    version = getattr(pynvml, "nvmlMemory_v2", None)
    if version is not None:
        try:
            return pynvml.nvmlDeviceGetMemoryInfo(handle, version=version)
        except _error_classes("NVMLError_FunctionNotFound", "NVMLError_NotSupported",
                              "NVMLError_ArgumentVersionMismatch"):
            pass
    return pynvml.nvmlDeviceGetMemoryInfo(handle)


def _temperature(handle: Any) -> int:
    """The die temperature: ``nvmlDeviceGetTemperatureV`` where the driver has it, else the older call."""
    sensor = pynvml.NVML_TEMPERATURE_GPU
    versioned = getattr(pynvml, "nvmlDeviceGetTemperatureV", None)
    if versioned is not None:
        try:
            return int(versioned(handle, sensor))
        except _error_classes("NVMLError_FunctionNotFound"):
            pass
    return int(pynvml.nvmlDeviceGetTemperature(handle, sensor))


# ---------------------------------------------------------------------- observation rows


def gpu_observations(model_id: int, at: datetime, report: GPUReport) -> list[Observation]:
    """The ``gpu.*`` observations of one report: summary rows, then one series per device.

    Summary rows: metric ``gpu.<field>`` for the :data:`SUMMARY_FIELDS`,
    labels ``{}`` (what policies read). Device rows: metric
    ``gpu.device.<field>``, labels ``{"device": uuid_or_index}`` (for the
    dashboard; the planner ignores labelled rows). Unknown values are not
    written; an unavailable sensor writes nothing.

    >>> from datetime import timezone
    >>> report = GPUReport(available=True, readings=(
    ...     DeviceReading("GPU-a", utilization=0.5, memory_used_bytes=2, memory_total_bytes=8, power_watts=100.0),
    ...     DeviceReading("MIG-b", mig=True, memory_used_bytes=2, memory_total_bytes=8)))
    >>> rows = gpu_observations(1, datetime(2026, 1, 5, tzinfo=timezone.utc), report)
    >>> [(r.metric, r.value) for r in rows if not r.labels]  # doctest: +NORMALIZE_WHITESPACE
    [('gpu.utilization', 0.5), ('gpu.memory_used_fraction', 0.25), ('gpu.memory_used_bytes', 4.0),
     ('gpu.memory_total_bytes', 16.0), ('gpu.power_watts', 100.0), ('gpu.devices', 2.0)]
    >>> [(r.metric, r.value) for r in rows if r.labels == {"device": "MIG-b"}]  # doctest: +NORMALIZE_WHITESPACE
    [('gpu.device.memory_used_fraction', 0.25), ('gpu.device.memory_used_bytes', 2.0),
     ('gpu.device.memory_total_bytes', 8.0)]
    >>> gpu_observations(1, datetime(2026, 1, 5, tzinfo=timezone.utc), GPUReport(available=False, reason="x"))
    []
    """
    if not report.available:
        return []
    rows = [Observation(time=at, model_id=model_id, sensor="gpu", metric=f"gpu.{name}", value=float(value), labels={})
            for name, value in report.summary().items() if value is not None]
    for reading in report.readings:
        rows += [Observation(time=at, model_id=model_id, sensor="gpu", metric=f"gpu.device.{name}",
                             value=float(value), labels={"device": reading.device})
                 for name, value in reading.values().items() if value is not None]
    return rows
