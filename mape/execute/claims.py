"""Who runs an action attempt: a process identity that outlives the process, and whether that process still lives.

Who calls it: the executor stamps :func:`this_process` on every claim
(``action_run.claimed_by``), and reconciliation (:mod:`mape.execute.reconcile`)
asks :func:`alive` whether a run left ``running`` still has a process behind
it. A pid alone is not enough: pids are reused, so the identity also holds the
process's start time (and the boot it started in), and a pid that now belongs
to another process counts as dead.

>>> me = this_process()
>>> Claimer.parse(str(me)) == me, alive(me)
(True, True)
>>> alive(Claimer(host=me.host, boot=me.boot, pid=me.pid, started="0"))  # the pid was reused
False
>>> alive(Claimer(host="elsewhere", boot="", pid=1, started="")) is None  # another machine: cannot tell
True
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Claimer", "alive", "this_process"]


@dataclass(frozen=True)
class Claimer:
    """A process, as ``host/boot/pid/started`` (``started``: its start time in clock ticks since boot)."""

    host: str
    boot: str
    pid: int
    started: str

    def __str__(self) -> str:
        return f"{self.host}/{self.boot}/{self.pid}/{self.started}"

    @classmethod
    def parse(cls, text: str | None) -> Claimer | None:
        """The claimer written by :meth:`__str__`; None for a missing or foreign value."""
        if not text:
            return None
        parts = text.rsplit("/", 3)
        if len(parts) != 4 or not parts[2].isdigit():
            return None
        return cls(host=parts[0], boot=parts[1], pid=int(parts[2]), started=parts[3])


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
    except OSError:
        return ""


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (``/proc/<pid>/stat`` field 22); None if it does not exist.

    Off Linux there is no ``/proc``: "" (unknown) for a pid that exists.
    """
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        if Path("/proc/self/stat").exists():
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return ""
        return ""
    except OSError:
        return ""
    fields = text.rsplit(")", 1)[-1].split()  # the command name may hold spaces and parentheses
    return fields[19] if len(fields) > 19 else ""


_cache: dict[int, Claimer] = {}


def this_process() -> Claimer:
    """This process (computed again after a fork: the child has a pid of its own)."""
    pid = os.getpid()
    me = _cache.get(pid)
    if me is None:
        me = _cache[pid] = Claimer(host=socket.gethostname(), boot=_boot_id(), pid=pid, started=_start_time(pid) or "")
    return me


def alive(claimer: Claimer) -> bool | None:
    """True if the process still runs, False if it is gone, None if this machine cannot tell (another host)."""
    me = this_process()
    if claimer.host != me.host:
        return None
    if claimer.boot and me.boot and claimer.boot != me.boot:
        return False  # this host has rebooted since: every process of that boot is gone
    started = _start_time(claimer.pid)
    if started is None:
        return False
    if _zombie(claimer.pid):
        return False
    return not (claimer.started and started and claimer.started != started)


def _zombie(pid: int) -> bool:
    """A killed process its parent has not reaped yet still has a ``/proc`` entry, in state Z."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = text.rsplit(")", 1)[-1].split()
    return bool(fields) and fields[0] in ("Z", "X")
