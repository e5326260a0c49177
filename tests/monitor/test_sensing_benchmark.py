"""The fleet-sensing benchmark's bookkeeping: exclusive phase times, collections apart, and a small real run.

``benchmarks/sensing.py`` reports the engine's overhead by phase and a
floor (decoding new parts, insert, commit, collections); these tests check
that its timer counts each wrapped call once, in its own phase, and that a
small fleet's run gives phases that add up to the tick.
"""

from __future__ import annotations

import gc
import time

from benchmarks.sensing import _Collections, _Timer, measure


class _Work:
    @staticmethod
    def outer() -> None:
        time.sleep(0.02)
        _Work.inner()

    @staticmethod
    def inner() -> None:
        time.sleep(0.03)


def test_a_wrapped_call_inside_another_counts_for_its_own_phase_only():
    timer = _Timer()
    timer.wrap(_Work, "outer", "join")
    timer.wrap(_Work, "inner", "reads")
    try:
        _Work.outer()
    finally:
        timer.restore()
    assert 0.03 <= timer.phases["reads"] < 0.045
    assert 0.02 <= timer.phases["join"] < 0.03  # the outer call less the inner one
    assert timer.seconds == 0.0  # no kernel ran
    before = dict(timer.phases)
    _Work.outer()  # restored: no longer timed
    assert timer.phases == before


def test_a_collection_during_a_phase_is_counted_as_collection_not_as_that_phase():
    timer = _Timer()
    collections = _Collections(timer)

    def busy() -> None:
        junk = [[i] for i in range(200_000)]
        for item in junk:
            item.append(item)  # cycles: the collector has work
        gc.collect()

    class Owner:
        step = staticmethod(busy)

    timer.wrap(Owner, "step")
    gc.callbacks.append(collections)
    try:
        began = time.perf_counter()
        Owner.step()
        elapsed = time.perf_counter() - began
    finally:
        gc.callbacks.remove(collections)
        timer.restore()
    assert collections.seconds > 0
    assert abs(timer.seconds + collections.seconds - elapsed) < 0.01


def test_a_small_fleet_run_reports_phases_that_add_up_to_the_tick():
    results = measure(n_models=3, rows=1200, passes=2)
    for name in ("cached", "uncached"):
        run = results[name]
        phases = run["overhead_median_by_phase_s"]
        assert set(phases) == {"reads", "join", "insert", "commit", "gc", "other"}
        assert phases["reads"] > 0 and phases["insert"] > 0 and phases["join"] > 0
        assert run["errors"] == 0 and run["models_drifting"] == 1
        floor = run["floor"]
        assert 0 < floor["decode_new_parts_s"] <= floor["decode_insert_commit_gc_s"]
        assert 0 < floor["floor_share_median"] < 1
