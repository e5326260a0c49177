"""``mape policy validate`` (file:line:column errors, policies that can fight, --strict) and ``mape actions list``."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from mape.cli import app
from tests.execute.plugin_dist import plugins  # noqa: F401  (the fixture)

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()

TYPOS = """\
apiVersion: mape/v1
kind: Policy
metadata:
  name: typos
spec:
  when: >-
    'data_drift' in symptoms
    && drift.shar_drifted > 0.3
  action:
    type: retrain
    params: {window: soon}
  cooldwn: 6h
"""


def _policy(name: str, action: str, models: str = "['*']", params: str = "{}") -> str:
    return (f"apiVersion: mape/v1\nkind: Policy\nmetadata: {{name: {name}}}\nspec:\n  selector: {{models: {models}}}\n"
            f"  when: drift.share_drifted > 0.3\n  action: {{type: {action}, params: {params}}}\n")


def test_a_clean_library_is_one_ok_line_and_exit_0():
    result = runner.invoke(app, ["policy", "validate", str(REPO / "policies")])
    assert result.exit_code == 0, result.output
    assert result.output == ("ok: 7 valid, 0 invalid, 0 warnings: fairness-guard, retrain-on-concept-drift, "
                             "retrain-on-drift, "
                             "retrain-when-carbon-is-low, rollback-on-regression, scale-down-when-gpu-idle, "
                             "scale-up-on-gpu-load\n")


def test_every_problem_is_one_line_with_file_line_column_and_field_and_the_exit_status_is_1(tmp_path: Path):
    bad = tmp_path / "typos.yaml"
    bad.write_text(TYPOS)
    (tmp_path / "good.yaml").write_text(_policy("good", "retrain", models="[fraud]"))

    result = runner.invoke(app, ["policy", "validate", str(tmp_path)])

    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"{bad}:8:14: spec.when: unknown field 'shar_drifted' of drift (did you mean 'share_drifted'?); drift has: "
        "detected, max_effect_size, min_q_value, n_current, n_drifted, n_features, n_reference, reference_version, "
        "share_drifted",
        f"{bad}:11:22: spec.action.params.window: 'soon' is not a duration; use a number and a unit such as 90s, "
        "15m, 6h, 14d or 2w",
        f"{bad}:12:3: spec.cooldwn: unknown field (did you mean 'cooldown'?); allowed here: "
        + result.stderr.splitlines()[2].split("allowed here: ")[1],
    ]
    assert result.stdout == "failed: 1 valid, 1 invalid, 0 warnings\n"


def test_policies_that_can_fight_are_a_warning_naming_both_and_an_error_under_strict(tmp_path: Path):
    retrain = tmp_path / "a-retrain.yaml"
    retrain.write_text(_policy("retrain-credit", "retrain", models="['credit-*']"))
    rollback = tmp_path / "b-rollback.yaml"
    rollback.write_text(_policy("rollback-risk", "rollback", models="['*-risk']"))
    (tmp_path / "c-elsewhere.yaml").write_text(_policy("rollback-fraud", "rollback", models="['fraud-*']"))

    warned = runner.invoke(app, ["policy", "validate", str(tmp_path)])
    assert warned.exit_code == 0, warned.output
    assert warned.stderr == (
        f"{retrain}:7:18: warning: spec.action.type: policy 'retrain-credit' can fight policy 'rollback-risk' "
        f"({rollback}:7:18): both select model 'credit-risk' at priority 0, with conflicting actions retrain and "
        "rollback; give one a higher spec.priority, or narrow a spec.selector\n")
    assert warned.stdout == "ok: 3 valid, 0 invalid, 1 warning: retrain-credit, rollback-risk, rollback-fraud\n"

    strict = runner.invoke(app, ["policy", "validate", "--strict", str(retrain), str(rollback)])
    assert strict.exit_code == 1
    assert strict.stderr.startswith(f"{retrain}:7:18: error: spec.action.type: policy 'retrain-credit' can fight")
    assert strict.stdout == "failed: 2 valid, 0 invalid, 1 warning (errors under --strict)\n"


def test_validate_knows_plugin_actions_their_params_and_conflicts_and_warns_of_a_broken_plugin(plugins,
                                                                                                 tmp_path: Path):
    up = tmp_path / "up.yaml"
    up.write_text(_policy("scale-up-on-load", "scale-up", params="{replicas: 2}"))
    down = tmp_path / "down.yaml"
    down.write_text(_policy("scale-down-at-night", "scale-down", params="{replicas: 1}"))
    bad = tmp_path / "bad.yaml"
    bad.write_text(_policy("scale-bad", "scale-up", params="{replicas: 1000}"))

    result = runner.invoke(app, ["policy", "validate", str(up), str(down), str(bad)])

    assert result.exit_code == 1
    # the command's own lines; a logging handler another test's runner left behind may add others
    lines = [line for line in result.stderr.splitlines() if line.startswith(("warning: ", "error: ", str(tmp_path)))]
    assert [line.split(" failed to load")[0] for line in lines[:2]] == [
        "warning: entry point gone = acme_broken.nothing of distribution acme-broken 0.1 (mape.actions)",
        "warning: entry point half = acme_broken.half of distribution acme-broken 0.1 (mape.actions)"]
    assert lines[2] == f"{bad}:7:47: spec.action.params.replicas: Input should be less than or equal to 100 (got 1000)"
    assert lines[3].startswith(f"{up}:7:18: warning: spec.action.type: policy 'scale-up-on-load' can fight policy "
                               f"'scale-down-at-night' ({down}:7:18)")
    assert "with conflicting actions scale-up and scale-down" in lines[3]
    assert result.stdout == "failed: 2 valid, 1 invalid, 3 warnings\n"


def test_actions_list_shows_every_action_with_its_origin_and_params_schema():
    result = runner.invoke(app, ["actions", "list"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "retrain: Train a candidate version and promote it if it is at least as good as production. [built-in]" \
        in lines
    params = json.loads(lines[lines.index("rollback: Return production to the last good version. [built-in]") + 1]
                        .removeprefix("  params: "))
    assert params["title"] == "RollbackParams" and params["properties"] == {}


def test_actions_list_names_plugin_actions_by_distribution_and_reports_broken_ones_with_exit_1(plugins):
    result = runner.invoke(app, ["actions", "list"])
    assert result.exit_code == 1
    assert "scale-up: Add replicas to the model's serving deployment. [acme-scaling 1.0 (entry point scaling)]" \
        in result.stdout.splitlines()
    assert result.stderr.count("error: entry point ") == 2 and "acme-broken 0.1" in result.stderr

    as_json = runner.invoke(app, ["actions", "list", "--json"])
    assert as_json.exit_code == 1
    data = json.loads(as_json.stdout)
    actions = {a["name"]: a for a in data["actions"]}
    assert actions["scale-up"]["origin"] == "acme-scaling 1.0 (entry point scaling)"
    assert actions["scale-up"]["conflicts"] == ["scale-down"]
    assert actions["scale-up"]["params_schema"]["properties"]["replicas"]["maximum"] == 100
    assert actions["retrain"]["timeout_seconds"] == 7200 and actions["retrain"]["origin"] == "built-in"
    assert sorted((f["distribution"], f["entry_point"]) for f in data["failures"]) == [
        ("acme-broken 0.1", "gone"), ("acme-broken 0.1", "half")]
