"""A description of the machine a benchmark ran on, written next to every result."""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from typing import Any


def describe() -> dict[str, Any]:
    memory_gib = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    memory_gib = round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass  # no /proc/meminfo (not Linux): memory is reported as unknown
    return {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "memory_gib": memory_gib,
    }


def write_results(name: str, results: dict[str, Any]) -> None:
    """Write ``results`` to ``benchmarks/results/<name>.json`` and print them."""
    import json
    from pathlib import Path

    text = json.dumps(results, indent=2) + "\n"
    (Path(__file__).parent / "results" / f"{name}.json").write_text(text)
    print(text, end="")
