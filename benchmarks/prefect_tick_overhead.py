"""How much does Prefect cost per tick? A sync flow vs an async flow, each with five stage tasks.

DESIGN.md asked to measure how a tick maps onto Prefect before choosing. This
runs both shapes in Prefect's local mode (a temporary server from
``prefect_test_harness``) with tasks that do no work, so the numbers are pure
orchestration overhead; medians over repeated runs, the first run (server
start) reported apart.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

from prefect import flow, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402
from prefect.testing.utilities import prefect_test_harness  # noqa: E402

from benchmarks.machine import describe, write_results  # noqa: E402

STAGES = ("begin", "monitor", "analyze", "plan", "dispatch")


@task(cache_policy=NO_CACHE)
def stage(name: str) -> str:
    return name


@flow(name="bench-sync-tick")
def sync_tick() -> list[str]:
    return [stage(name) for name in STAGES]


@flow(name="bench-async-tick")
async def async_tick() -> list[str]:
    return [stage(name) for name in STAGES]


def measure(repeats: int = 15) -> dict[str, object]:
    results: dict[str, object] = {"machine": describe(), "stages_per_tick": len(STAGES), "repeats": repeats}
    with prefect_test_harness(server_startup_timeout=120):
        began = time.perf_counter()
        sync_tick()
        results["first_run_s"] = round(time.perf_counter() - began, 3)
        for name, call in (("sync", sync_tick), ("async", lambda: asyncio.run(async_tick()))):
            times = []
            for _ in range(repeats):
                began = time.perf_counter()
                call()
                times.append(time.perf_counter() - began)
            results[f"{name}_median_s"] = round(statistics.median(times), 3)
            results[f"{name}_p90_s"] = round(sorted(times)[int(0.9 * (len(times) - 1))], 3)
    results["async_over_sync"] = round(results["async_median_s"] / results["sync_median_s"], 3)  # type: ignore[operator]
    return results


def main() -> None:
    write_results("prefect_tick_overhead", measure())


if __name__ == "__main__":
    main()
