"""Policy unit tests (``*.test.yaml``): the shipped ones pass, wrong expectations fail with a readable diff."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mape.plan.testing import is_policy_test_file, run_policy_tests
from tests.plan.helpers import KNOWN_ACTIONS, policy_text

POLICIES = Path(__file__).resolve().parents[2] / "policies"
SHIPPED_TESTS = sorted(p for p in POLICIES.iterdir() if is_policy_test_file(p))
RETRAIN = POLICIES / "retrain-on-drift.yaml"


def _write(directory: Path, name: str, document: dict) -> Path:
    path = directory / name
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def _lasting_drift_test(expect_at_second_tick: list[dict]) -> dict:
    """retrain-on-drift over three hourly ticks of drift with an accuracy drop: it fires at the third."""
    return {
        "policies": [str(RETRAIN)],
        "tests": [{
            "name": "lasting drift",
            "model": {"name": "credit-risk"},
            "ticks": [
                {"signals": {"drift.share_drifted": 0.5, "performance.accuracy_drop": 0.05},
                 "symptoms": ["data_drift"], "expect": []},
                {"expect": expect_at_second_tick},
                {"expect": [{"policy": "retrain-on-drift", "action": "retrain", "status": "proposed"}]},
            ],
        }],
    }


def test_the_shipped_policies_have_tests():
    assert {p.name for p in SHIPPED_TESTS} >= {"retrain-on-drift.test.yaml", "rollback-on-regression.test.yaml"}


@pytest.mark.parametrize("path", SHIPPED_TESTS, ids=lambda p: p.name)
def test_every_shipped_policy_test_passes(path: Path):
    report = run_policy_tests(path, known_actions=KNOWN_ACTIONS)
    assert report.ok, "\n".join(report.lines())
    assert report.passed == len(yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]) >= 5


def test_a_directory_runs_every_test_file_in_it_and_nothing_else():
    report = run_policy_tests(POLICIES, known_actions=KNOWN_ACTIONS)
    assert report.ok, "\n".join(report.lines())
    assert {r.file for r in report.results} == {str(p) for p in SHIPPED_TESTS}


def test_a_missing_decision_fails_with_expected_and_got_and_the_context(tmp_path: Path):
    path = _write(tmp_path, "wrong.test.yaml",
                  _lasting_drift_test([{"policy": "retrain-on-drift", "action": "retrain", "status": "proposed"}]))
    report = run_policy_tests(path, known_actions=KNOWN_ACTIONS)
    assert not report.ok and (report.passed, report.failed) == (0, 1)
    [failure] = report.results[0].failures
    assert failure.index == 1 and failure.at.isoformat() == "2026-01-05T01:00:00+00:00"
    text = "\n".join(report.lines())
    assert "FAIL  " + str(path) + ": lasting drift" in text
    assert "ticks[1] at 2026-01-05T01:00:00+00:00:" in text
    assert "- expected: retrain-on-drift -> retrain (proposed)\n" in text
    assert "+ got:      no decision" in text
    # why it did not fire: the drift had lasted one hour, not two
    assert failure.context["symptoms"]["data_drift"]["age_seconds"] == 3600.0
    assert '"age_seconds": 3600.0' in text
    # the third tick still passes: its cooldown and ages do not depend on the wrong expectation
    assert [f.index for f in report.results[0].failures] == [1]


def test_an_unexpected_or_different_decision_fails_naming_what_was_written(tmp_path: Path):
    document = _lasting_drift_test([])
    document["tests"][0]["ticks"][2]["expect"] = [
        {"policy": "retrain-on-drift", "status": "proposed", "reason": "cooldown"}]
    document["tests"].append({**document["tests"][0], "name": "nothing expected"})
    document["tests"][1]["ticks"] = [*document["tests"][0]["ticks"][:2], {"expect": []}]
    report = run_policy_tests(_write(tmp_path, "wrong.test.yaml", document), known_actions=KNOWN_ACTIONS)
    [reason, unexpected] = report.results
    assert "\n".join(reason.lines()).count("- expected: retrain-on-drift (proposed, reason containing 'cooldown')") == 1
    assert "+ got:      retrain-on-drift -> retrain (proposed)" in str(reason)
    assert "- expected: no decision" in str(unexpected)
    assert "+ got:      retrain-on-drift -> retrain (proposed)" in str(unexpected)
    assert str(report) == "0 passed, 2 failed"


def test_decisions_of_earlier_ticks_count_for_cooldown_and_in_flight_runs_make_the_model_busy(tmp_path: Path):
    (tmp_path / "fast.yaml").write_text(policy_text("fast", when="drift.share_drifted > 0.3", cooldown="2h"))
    (tmp_path / "gated.yaml").write_text(policy_text("gated", when="drift.share_drifted > 0.3", action="rollback",
                                                     approval="required", priority=-1, cooldown="90m"))
    document = {"policies": ["."], "tests": [{
        "name": "cooldown, approval and a busy model",
        "interval": "1h",
        "ticks": [
            {"signals": {"drift.share_drifted": 0.5},
             "expect": [{"policy": "fast", "status": "proposed"},
                        {"policy": "gated", "status": "suppressed", "reason": "outranked: policy fast"}]},
            {"expect": [{"policy": "fast", "status": "suppressed", "reason": "cooldown 2h"},
                        {"policy": "gated", "action": "rollback", "status": "awaiting_approval"}]},
            {"expect": [{"policy": "fast", "status": "proposed"},
                        {"policy": "gated", "status": "suppressed", "reason": "cooldown"}]},
            {"actions": [{"action": "retrain", "state": "running"}],
             "expect": [{"policy": "fast", "status": "suppressed", "reason": "busy: action run"},
                        {"policy": "gated", "status": "suppressed", "reason": "busy"}]},
            {"advance": "3h", "actions": [{"action": "retrain", "state": "failed"}],
             "expect": [{"policy": "fast", "status": "proposed"},
                        {"policy": "gated", "status": "suppressed", "reason": "outranked"}]},
        ],
    }]}
    report = run_policy_tests(_write(tmp_path, "p.test.yaml", document), known_actions=KNOWN_ACTIONS)
    assert report.ok, "\n".join(report.lines())


def test_a_requested_action_run_counts_like_a_manual_request_and_stale_signals_are_absent(tmp_path: Path):
    (tmp_path / "p.yaml").write_text(policy_text("p", when="has(drift.share_drifted) && drift.share_drifted > 0.3",
                                                 cooldown="6h"))
    document = {"policies": ["p.yaml"], "tests": [{
        "name": "manual run, then cooldown; signals not observed again are stale",
        "ticks": [
            {"signals": {"drift.share_drifted": 0.5}, "actions": [{"action": "retrain", "state": "running"}],
             "expect": [{"policy": "p", "status": "suppressed", "reason": "busy"}]},
            {"actions": [{"action": "retrain", "state": "succeeded"}],
             "expect": [{"policy": "p", "status": "suppressed", "reason": "cooldown: last retrain decision"}]},
            {"advance": "6h", "signals": {}, "expect": []},
            {"signals": {"drift.share_drifted": 0.5}, "expect": [{"policy": "p", "status": "proposed"}]},
        ],
    }]}
    report = run_policy_tests(_write(tmp_path, "p.test.yaml", document), known_actions=KNOWN_ACTIONS)
    assert report.ok, "\n".join(report.lines())


@pytest.mark.parametrize(("document", "where", "message"), [
    ({"policies": ["p.yaml"], "tests": [{"name": "t", "ticks": [{"expcet": []}]}]},
     "tests[0].ticks[0].expcet", "unknown field (did you mean 'expect'?)"),
    ({"policies": ["p.yaml"], "tests": [{"name": "t", "ticks": [{"signals": {}}]}]},
     "tests[0]", "no tick has an expect, so the test could never fail"),
    ({"policies": ["p.yaml"], "tests": [{"name": "t", "ticks": [{"expect": [{"policy": "p", "status": "proposd"}]}]}]},
     "tests[0].ticks[0].expect[0].status", "Input should be 'proposed'"),
    ({"policies": ["p.yaml"], "tests": [{"name": "t", "ticks": [{"signals": {"share_drifted": 0.5}, "expect": []}]}]},
     "tests[0].ticks[0].signals", "with root drift, performance"),
    ({"policies": ["p.yaml"], "tests": [{"name": "t", "ticks": [{"symptoms": [{"kind": "d", "severity": "bad"}],
                                                                 "expect": []}]}]},
     "tests[0].ticks[0].symptoms[0].severity", "'info', 'warning' or 'critical'"),
    ({"policies": ["missing.yaml"], "tests": [{"name": "t", "ticks": [{"expect": []}]}]},
     "policies[0]", "cannot read policy file"),
    ({"policies": ["typo.yaml"], "tests": [{"name": "t", "ticks": [{"expect": []}]}]},
     "policies[0]", "unknown action 'retrian'"),
])
def test_a_bad_test_file_is_one_error_naming_the_file_and_the_field(tmp_path: Path, document, where, message):
    (tmp_path / "p.yaml").write_text(policy_text("p"))
    (tmp_path / "typo.yaml").write_text(policy_text("typo", action="retrian"))
    path = _write(tmp_path, "bad.test.yaml", document)
    report = run_policy_tests(path, known_actions=KNOWN_ACTIONS)
    assert not report.ok and report.results == []
    [error] = report.errors
    assert str(error).startswith(f"{path}: {where}: "), str(error)
    assert message in str(error)


def test_a_tick_the_world_cannot_do_fails_the_test_with_its_field(tmp_path: Path):
    (tmp_path / "p.yaml").write_text(policy_text("p"))
    document = {"policies": ["p.yaml"], "tests": [
        {"name": "no such version", "versions": [{"promoted_at": "-1h"}],
         "ticks": [{"expect": [{"policy": "p", "status": "proposed"}]}, {"promote": 3, "expect": []}]},
        {"name": "fine", "ticks": [{"expect": [{"policy": "p", "status": "proposed"}]}]},
    ]}
    report = run_policy_tests(_write(tmp_path, "t.test.yaml", document), known_actions=KNOWN_ACTIONS)
    [broken, fine] = report.results
    assert not broken.passed and fine.passed
    assert broken.error == (f"{tmp_path / 't.test.yaml'}: tests[0].ticks[1].promote: "
                            "no version 3; the test's versions are [1]")


def test_no_test_files_or_a_missing_path_is_an_error_not_a_pass(tmp_path: Path):
    assert [str(e) for e in run_policy_tests(tmp_path).errors] == [
        f"{tmp_path}: no policy test files (*.test.yaml) here"]
    assert not run_policy_tests(tmp_path / "nope.test.yaml").ok


def test_the_readme_example_passes_and_the_readme_documents_every_field_of_the_format(tmp_path: Path):
    from mape.plan.testing import ActionRunSpec, ExpectedDecision, PolicyTestCase, PolicyTestFile, TickSpec, VersionSpec

    readme = (POLICIES / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Testing your policy", 1)[1].split("\n## ", 1)[0]
    example = next(block for block in section.split("```yaml\n")[1:] if block.startswith("policies:"))
    document = yaml.safe_load(example.split("```", 1)[0])
    document["policies"] = [str(POLICIES / name) for name in document["policies"]]
    report = run_policy_tests(_write(tmp_path, "readme.test.yaml", document), known_actions=KNOWN_ACTIONS)
    assert report.ok and report.passed == 1, "\n".join(report.lines())

    for prefix, model in (("", PolicyTestFile), ("tests[].", PolicyTestCase), ("ticks[].", TickSpec)):
        for name in model.model_fields:
            assert f"`{prefix}{name}" in section, f"policies/README.md does not document {prefix}{name}"
    for model in (VersionSpec, ActionRunSpec, ExpectedDecision):
        for name in model.model_fields:
            assert f"`{name}" in section, f"policies/README.md does not document {model.__name__}.{name}"
