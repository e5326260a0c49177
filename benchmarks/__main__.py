"""Run every benchmark and write its results (with the machine's description) to benchmarks/results/."""

from __future__ import annotations

from benchmarks import planning, prefect_tick_overhead


def main() -> None:
    for module in (prefect_tick_overhead, planning):
        print(f"== {module.__name__}")
        module.main()


if __name__ == "__main__":
    main()
