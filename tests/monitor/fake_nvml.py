"""A fake NVML for the GPU sensor's tests, installed over the real ``pynvml`` module's functions.

It models what the sensor relies on, the way NVML behaves: GPUs and their MIG
instances, handles looked up by index or UUID, the real ctypes structures
(``c_nvmlUtilization_t``, ``c_nvmlMemory_t``, ``c_nvmlMemory_v2_t``) and
integer units (percent, bytes, milliwatts, millijoules, degrees), and the
real ``pynvml.NVMLError`` subclasses: ``LibraryNotFound`` from ``nvmlInit``
without a driver, ``Uninitialized`` before ``nvmlInit`` or after the last
``nvmlShutdown``, ``NotFound`` for an unknown UUID, ``InvalidArgument`` for
an index out of range, ``NotSupported`` for utilization on MIG instances and
GPUs in MIG mode and for power, energy and temperature on MIG instances,
``FunctionNotFound`` for calls an old driver lacks. Any NVML function it
does not fake fails the test (``AssertionError``), so the sensor cannot reach
the real library behind the fake's back.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pynvml
import pytest

GiB = 1024**3

FAKED = ("nvmlInit", "nvmlShutdown", "nvmlDeviceGetCount", "nvmlDeviceGetHandleByIndex", "nvmlDeviceGetHandleByUUID",
         "nvmlDeviceGetUUID", "nvmlDeviceGetUtilizationRates", "nvmlDeviceGetMemoryInfo", "nvmlDeviceGetPowerUsage",
         "nvmlDeviceGetTotalEnergyConsumption", "nvmlDeviceGetTemperature", "nvmlDeviceGetTemperatureV")


def nvml_error(code: int) -> pynvml.NVMLError:
    """The exception the real binding raises for an NVML return code (its ``NVMLError_*`` subclass)."""
    return pynvml.NVMLError(code)


@dataclass
class FakeMIG:
    """A MIG instance: NVML gives its UUID and memory; utilization, power, energy, temperature are not supported."""

    uuid: str
    memory_total: int = 10 * GiB
    memory_used: int = 0


@dataclass
class FakeGPU:
    """A whole GPU; a reading of ``None`` is one this GPU does not support (``NVMLError_NotSupported``).

    Units are NVML's: ``utilization`` in percent, ``power_mw`` in milliwatts, ``energy_mj`` in millijoules
    since driver load, ``temperature`` in degrees Celsius. ``no_permission`` names readings that raise
    ``NVMLError_NoPermission``; ``lost`` makes every call on the GPU raise ``NVMLError_GpuIsLost``.
    """

    uuid: str
    memory_total: int = 80 * GiB
    memory_used: int = 0
    memory_reserved: int = 512 * 1024**2
    utilization: int | None = 0
    power_mw: int | None = 60_000
    energy_mj: int | None = 1_000_000
    temperature: int | None = 35
    mig: list[FakeMIG] = field(default_factory=list)
    no_permission: frozenset[str] = frozenset()
    lost: bool = False

    @property
    def mig_enabled(self) -> bool:
        return bool(self.mig)


@dataclass(frozen=True, eq=False)
class _Handle:
    """An opaque device handle (the real one is a ``c_nvmlDevice_t`` pointer): a new object per lookup."""

    device: FakeGPU | FakeMIG
    parent: FakeGPU | None = None


class FakeNVML:
    """NVML over a list of GPUs; ``install(monkeypatch)`` puts it in place of ``pynvml``'s functions.

    Parameters
    ----------
    gpus : list of FakeGPU
        The machine's GPUs, in NVML index order.
    driver : bool
        Without a driver ``nvmlInit`` raises ``NVMLError_LibraryNotFound``, as the real binding does when
        ``libnvidia-ml.so.1`` cannot be loaded.
    memory_v2, temperature_v : bool
        Whether the driver has ``nvmlDeviceGetMemoryInfo_v2`` and ``nvmlDeviceGetTemperatureV``
        (older drivers raise ``NVMLError_FunctionNotFound``).
    """

    def __init__(self, gpus: list[FakeGPU] | None = None, *, driver: bool = True, memory_v2: bool = True,
                 temperature_v: bool = True) -> None:
        self.gpus = list(gpus or [])
        self.driver = driver
        self.memory_v2 = memory_v2
        self.temperature_v = temperature_v
        self.refcount = 0
        self.calls: Counter[str] = Counter()

    def install(self, monkeypatch: pytest.MonkeyPatch) -> FakeNVML:
        for name in FAKED:
            monkeypatch.setattr(pynvml, name, self._counted(name))

        def unfaked(name: str) -> Any:
            raise AssertionError(f"the GPU sensor called {name}, which the fake NVML does not model")

        monkeypatch.setattr(pynvml, "_nvmlGetFunctionPointer", unfaked)
        return self

    def _counted(self, name: str) -> Any:
        method = getattr(self, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return method(*args, **kwargs)

        return call

    # ------------------------------------------------------------------ library

    def nvmlInit(self) -> None:
        if not self.driver:
            raise nvml_error(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
        self.refcount += 1

    def nvmlShutdown(self) -> None:
        self._initialized()
        self.refcount -= 1

    def _initialized(self) -> None:
        if self.refcount <= 0:
            raise nvml_error(pynvml.NVML_ERROR_UNINITIALIZED)

    # ------------------------------------------------------------------ handles

    def nvmlDeviceGetCount(self) -> int:
        self._initialized()
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Handle:
        self._initialized()
        if not isinstance(index, int):
            raise TypeError(f"an integer is required (got type {type(index).__name__})")  # ctypes' c_uint(index)
        if not 0 <= index < len(self.gpus):
            raise nvml_error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return self._usable(_Handle(self.gpus[index]))

    def nvmlDeviceGetHandleByUUID(self, uuid: str | bytes) -> _Handle:
        self._initialized()
        uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
        for gpu in self.gpus:
            if gpu.uuid == uuid:
                return self._usable(_Handle(gpu))
            for instance in gpu.mig:
                if instance.uuid == uuid:
                    return self._usable(_Handle(instance, parent=gpu))
        raise nvml_error(pynvml.NVML_ERROR_NOT_FOUND)

    def _usable(self, handle: _Handle) -> _Handle:
        gpu = handle.parent or handle.device
        if isinstance(gpu, FakeGPU) and gpu.lost:
            raise nvml_error(pynvml.NVML_ERROR_GPU_IS_LOST)
        return handle

    def _gpu(self, handle: _Handle, reading: str) -> FakeGPU:
        """The whole GPU of a handle, for readings NVML does not support on MIG instances."""
        self._initialized()
        self._usable(handle)
        if handle.parent is not None:
            raise nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        assert isinstance(handle.device, FakeGPU)
        if reading in handle.device.no_permission:
            raise nvml_error(pynvml.NVML_ERROR_NO_PERMISSION)
        return handle.device

    @staticmethod
    def _supported(value: int | None) -> int:
        if value is None:
            raise nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return value

    # ------------------------------------------------------------------ readings

    def nvmlDeviceGetUUID(self, handle: _Handle) -> str:
        self._initialized()
        self._usable(handle)
        return handle.device.uuid

    def nvmlDeviceGetUtilizationRates(self, handle: _Handle) -> pynvml.c_nvmlUtilization_t:
        gpu = self._gpu(handle, "utilization")
        if gpu.mig_enabled:  # "On MIG-enabled GPUs, querying device utilization rates is not currently supported."
            raise nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        percent = self._supported(gpu.utilization)
        return pynvml.c_nvmlUtilization_t(gpu=percent, memory=percent // 2)

    def nvmlDeviceGetMemoryInfo(self, handle: _Handle, version: int | None = None) -> Any:
        self._initialized()
        self._usable(handle)
        device = handle.device
        if isinstance(device, FakeGPU) and "memory" in device.no_permission:
            raise nvml_error(pynvml.NVML_ERROR_NO_PERMISSION)
        if isinstance(device, FakeGPU) and device.mig_enabled:  # the whole GPU: what its instances use
            used = sum(instance.memory_used for instance in device.mig)
        else:
            used = device.memory_used
        if not version:
            reserved = getattr(device, "memory_reserved", 0)  # version 1 counts the driver's reservation as used
            return pynvml.c_nvmlMemory_t(total=device.memory_total, used=used + reserved,
                                         free=device.memory_total - used - reserved)
        if not self.memory_v2:
            raise nvml_error(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
        if version != pynvml.nvmlMemory_v2:
            raise nvml_error(pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH)
        reserved = getattr(device, "memory_reserved", 0)
        return pynvml.c_nvmlMemory_v2_t(version=version, total=device.memory_total, reserved=reserved, used=used,
                                        free=device.memory_total - used - reserved)

    def nvmlDeviceGetPowerUsage(self, handle: _Handle) -> int:
        return self._supported(self._gpu(handle, "power").power_mw)

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: _Handle) -> int:
        return self._supported(self._gpu(handle, "energy").energy_mj)

    def nvmlDeviceGetTemperature(self, handle: _Handle, sensor: int) -> int:
        if sensor != pynvml.NVML_TEMPERATURE_GPU:
            raise nvml_error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return self._supported(self._gpu(handle, "temperature").temperature)

    def nvmlDeviceGetTemperatureV(self, handle: _Handle, sensor: int, version: int = pynvml.nvmlTemperature_v1) -> int:
        if not self.temperature_v:
            raise nvml_error(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
        if version != pynvml.nvmlTemperature_v1:
            raise nvml_error(pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH)
        return self.nvmlDeviceGetTemperature(handle, sensor)
