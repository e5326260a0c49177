"""Run the benchmarks and write their results (with the machine's description) to benchmarks/results/.

``python -m benchmarks`` runs them all but the long ones of :data:`ON_REQUEST`; ``python -m benchmarks
oscillation planning`` runs those named (``python -m benchmarks soak``: the 10,000-tick soak, about an hour).
"""

from __future__ import annotations

import sys

from benchmarks import (action_latency, adaptation, carbon_backtest, dashboard, drift_suite, fleet_scale,
                        online_detectors, oscillation, planning, prefect_tick_overhead, retention, sensing, simulate,
                        soak)

BENCHMARKS = {module.__name__.rsplit(".", 1)[-1]: module
              for module in (prefect_tick_overhead, planning, oscillation, simulate, online_detectors, drift_suite,
                              sensing, carbon_backtest, action_latency, dashboard, retention, fleet_scale,
                              adaptation, soak)}

#: Benchmarks whose main() reads command-line options: run from here with their defaults.
TAKES_ARGUMENTS = frozenset({"fleet_scale", "retention", "adaptation", "soak"})
#: Benchmarks too long for ``make bench``: run only when named.
ON_REQUEST = frozenset({"soak"})


def main(names: list[str] | None = None) -> None:
    names = names or [name for name in BENCHMARKS if name not in ON_REQUEST]
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        sys.exit(f"unknown benchmark {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    for name in names:
        print(f"== {BENCHMARKS[name].__name__}")
        if name in TAKES_ARGUMENTS:
            BENCHMARKS[name].main([])
        else:
            BENCHMARKS[name].main()


if __name__ == "__main__":
    main(sys.argv[1:])
