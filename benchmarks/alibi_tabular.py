"""The alibi-detect baseline of the drift suite: ``TabularDrift`` timed in alibi-detect's own environment.

Who calls it: :mod:`benchmarks.drift_suite` runs this file with the Python of
``.venv-alibi`` (numpy 1.26; alibi-detect cannot live in the main
environment, see ``make test-alibi``), on the very arrays its own sensor
scored, written to ``.npy`` files. It prints one JSON object:

- ``import_s``: ``import alibi_detect.cd`` in a fresh process;
- ``fit_s``: building ``TabularDrift`` on the reference (all features
  numeric, so one Kolmogorov-Smirnov test per feature, FDR correction as our
  sensor's Benjamini-Hochberg);
- ``first_score_s``, ``score_median_s``: ``predict`` on the current table,
  once cold and the median of ``repeat`` more;
- ``all_shifted_score_s``: one ``predict`` on the table with every feature
  shifted by 0.05 sigma.

Usage: ``python benchmarks/alibi_tabular.py DIRECTORY REPEAT`` with
``reference.npy``, ``current.npy`` and ``shifted.npy`` in ``DIRECTORY``.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path


def main(directory: Path, repeat: int) -> dict[str, object]:
    import numpy as np

    began = time.perf_counter()
    from alibi_detect.cd import TabularDrift
    import_s = time.perf_counter() - began

    reference, current, shifted = (np.load(directory / f"{name}.npy") for name in ("reference", "current", "shifted"))
    began = time.perf_counter()
    detector = TabularDrift(reference, p_val=0.05, categories_per_feature={}, correction="fdr")
    fit_s = time.perf_counter() - began

    def timed(table: np.ndarray) -> float:
        began = time.perf_counter()
        detector.predict(table)
        return time.perf_counter() - began

    first = timed(current)
    median = statistics.median(timed(current) for _ in range(repeat))
    return {"alibi_detect": _version(), "numpy": np.__version__, "import_s": round(import_s, 2),
            "fit_s": round(fit_s, 3), "repeat": repeat, "first_score_s": round(first, 3),
            "score_median_s": round(median, 3), "all_shifted_score_s": round(timed(shifted), 3)}


def _version() -> str:
    from importlib.metadata import version

    return version("alibi-detect")


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), int(sys.argv[2]))))
