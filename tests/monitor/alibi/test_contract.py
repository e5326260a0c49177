"""The alibi-detect wrappers honour the common detector contract: the very checks of test_detectors_common.py."""

from __future__ import annotations

import pytest

pytest.importorskip("alibi_detect")

from mape.monitor.detectors.alibi import ALIBI_DETECTORS  # noqa: E402
from tests.monitor import test_detectors_common as common  # noqa: E402

pytestmark = pytest.mark.alibi

CHECKS = [
    common.test_parameters_are_keyword_only_and_repr_shows_changed_ones,
    common.test_clone_is_unfitted_with_equal_params,
    common.test_fit_returns_self_sets_underscore_state_and_keeps_params,
    common.test_pickled_detector_scores_the_same,
    common.test_seeded_runs_are_deterministic,
    common.test_clean_streams_alarm_at_about_alpha,
    common.test_score_before_fit_raises_not_fitted,
    common.test_missing_values_are_dropped_and_counted,
    common.test_an_empty_current_sample_gives_no_verdict,
]


@pytest.mark.parametrize("cls", ALIBI_DETECTORS)
@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__.removeprefix("test_"))
def test_alibi_detector_honours_the_common_contract(check, cls):
    check(cls)


@pytest.mark.parametrize("cls", ALIBI_DETECTORS)
@pytest.mark.parametrize("bad", [1.5, 0.0, -0.1, "0.05", True, float("nan")])
def test_invalid_alpha_has_the_one_message_shape(cls, bad):
    common.test_invalid_alpha_has_the_one_message_shape(cls, bad)
