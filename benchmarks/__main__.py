"""Run every benchmark and write its results (with the machine's description) to benchmarks/results/."""

from __future__ import annotations

from benchmarks import prefect_tick_overhead


def main() -> None:
    for module in (prefect_tick_overhead,):
        print(f"== {module.__name__}")
        module.main()


if __name__ == "__main__":
    main()
