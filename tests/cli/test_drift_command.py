"""``mape drift``: two files in, one JSON verdict out; clear errors naming the file or the columns."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from mape.cli import app

runner = CliRunner()
FEATURE_KEYS = {"feature", "test", "statistic", "p_value", "q_value", "effect_size", "effect_name", "significant",
                "drifted"}


def table(seed: int, n: int = 3000, *, shift: float = 0.0, mix: float = 0.5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "age": rng.normal(40.0 + shift * 10.0, 10.0, size=n),
        "income": rng.lognormal(3.5, 0.4, size=n),
        "visits": rng.poisson(3.0, size=n),
        "plan": rng.choice(["free", "pro"], size=n, p=[mix, 1 - mix]),
        "churned": rng.random(n) < 0.2,
    })


def run(*args: str):
    return runner.invoke(app, ["drift", *args])


def test_a_shifted_file_prints_the_drifted_features_as_json(tmp_path: Path):
    table(1).to_csv(tmp_path / "reference.csv", index=False)
    table(2, shift=0.5, mix=0.3).to_csv(tmp_path / "current.csv", index=False)

    result = run("--reference", str(tmp_path / "reference.csv"), "--current", str(tmp_path / "current.csv"))

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report) == {"features", "drift", "share_drifted", "n_reference", "n_current"}
    assert (report["n_reference"], report["n_current"], report["drift"]) == (3000, 3000, True)
    features = {f["feature"]: f for f in report["features"]}
    assert list(features) == ["age", "income", "visits", "plan", "churned"]
    assert all(set(f) == FEATURE_KEYS for f in features.values())
    # numeric columns get KS and a Wasserstein effect; text and bool columns are categorical automatically
    assert {name: (f["test"], f["effect_name"]) for name, f in features.items()} == {
        "age": ("ks", "wasserstein"), "income": ("ks", "wasserstein"), "visits": ("ks", "wasserstein"),
        "plan": ("chi2", "js"), "churned": ("chi2", "js")}
    assert [name for name, f in features.items() if f["drifted"]] == ["age", "plan"]
    assert features["age"]["effect_size"] == pytest.approx(0.5, abs=0.08)
    assert report["share_drifted"] == pytest.approx(2 / 5)


def test_no_drift_still_exits_0_and_options_choose_test_columns_and_alpha(tmp_path: Path):
    table(3).to_parquet(tmp_path / "reference.parquet")
    table(4).to_parquet(tmp_path / "current.parquet")

    result = run("--reference", str(tmp_path / "reference.parquet"), "--current", str(tmp_path / "current.parquet"),
                 "--test", "cvm", "--categorical", "visits", "--exclude", "income,churned", "--alpha", "0.01")

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["drift"] is False and report["share_drifted"] == 0.0
    assert [(f["feature"], f["test"]) for f in report["features"]] == [("age", "cvm"), ("visits", "chi2"),
                                                                        ("plan", "chi2")]


def test_csv_against_parquet_and_nan_is_null(tmp_path: Path):
    reference = table(5)
    reference["empty"] = np.nan
    current = table(6)
    current["empty"] = np.nan
    reference.to_csv(tmp_path / "reference.csv", index=False)
    current.to_parquet(tmp_path / "current.parquet")
    (tmp_path / "tiny.csv").write_text("age,income,visits,plan,churned,empty\n1,2,3,free,true,\n")

    result = run("--reference", str(tmp_path / "reference.csv"), "--current", str(tmp_path / "current.parquet"))
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert "empty" not in {f["feature"] for f in report["features"]}  # entirely missing: not tested
    assert report["drift"] is False

    tiny = run("--reference", str(tmp_path / "reference.csv"), "--current", str(tmp_path / "tiny.csv"))
    assert tiny.exit_code == 0, tiny.output
    assert "NaN" not in tiny.stdout
    verdict = json.loads(tiny.stdout)
    assert verdict["drift"] is None and verdict["share_drifted"] is None and verdict["features"] == []
    assert verdict["reason"].startswith("insufficient data: 3000 reference and 1 current rows")


def test_a_missing_or_unreadable_file_exits_2_naming_it(tmp_path: Path):
    table(7).to_csv(tmp_path / "reference.csv", index=False)
    missing = tmp_path / "nowhere.parquet"

    result = run("--reference", str(tmp_path / "reference.csv"), "--current", str(missing))
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: --current file {missing} does not exist"
    assert result.stdout == ""

    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet at all")
    result = run("--reference", str(broken), "--current", str(tmp_path / "reference.csv"))
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: cannot read --reference file {broken} as Parquet: ")

    result = run("--reference", str(tmp_path / "reference.csv"), "--current", str(tmp_path / "data.json"))
    assert result.exit_code == 2
    assert "data.json: cannot tell its format from its name; use a .csv or .parquet file" in result.stderr


def test_mismatched_columns_exit_2_naming_them(tmp_path: Path):
    table(8).to_csv(tmp_path / "reference.csv", index=False)
    table(9).rename(columns={"visits": "sessions"}).drop(columns="plan").to_csv(tmp_path / "current.csv", index=False)

    result = run("--reference", str(tmp_path / "reference.csv"), "--current", str(tmp_path / "current.csv"))

    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: the files have different columns: 'visits', 'plan' only in {tmp_path / 'reference.csv'}; "
        f"'sessions' only in {tmp_path / 'current.csv'} (leave a column out with --exclude)")
    excluded = run("--reference", str(tmp_path / "reference.csv"), "--current", str(tmp_path / "current.csv"),
                   "--exclude", "visits,plan,sessions")
    assert excluded.exit_code == 0, excluded.output
    assert [f["feature"] for f in json.loads(excluded.stdout)["features"]] == ["age", "income", "churned"]


def test_bad_options_exit_2_with_one_line(tmp_path: Path):
    table(10).to_csv(tmp_path / "a.csv", index=False)
    files = ("--reference", str(tmp_path / "a.csv"), "--current", str(tmp_path / "a.csv"))

    assert run(*files, "--test", "anderson").stderr.strip() == "error: --test 'anderson': use ks or cvm"
    bad_alpha = run(*files, "--alpha", "1.5")
    assert bad_alpha.exit_code == 2
    assert bad_alpha.stderr.strip() == (
        "error: The 'alpha' parameter of DriftSensor must be a float in (0, 1). Got 1.5 instead.")
    unknown = run(*files, "--categorical", "colour")
    assert unknown.exit_code == 2
    assert unknown.stderr.strip() == "error: --categorical names columns in neither file: 'colour'"


def test_a_column_numeric_in_one_file_and_text_in_the_other_is_named(tmp_path: Path):
    table(11).to_csv(tmp_path / "reference.csv", index=False)
    current = table(12)
    current["income"] = current["income"].round(1).astype(str).where(current.index % 7 > 0, "unknown")
    current.to_csv(tmp_path / "current.csv", index=False)

    result = run("--reference", str(tmp_path / "reference.csv"), "--current", str(tmp_path / "current.csv"))

    assert result.exit_code == 2
    message = result.stderr.strip()
    assert message.startswith(f"error: column 'income' is numeric in {tmp_path / 'reference.csv'} but ")
    assert message.endswith(f" in {tmp_path / 'current.csv'}; name it in --categorical to test it as categories")
    as_categories = run("--reference", str(tmp_path / "reference.csv"), "--current", str(tmp_path / "current.csv"),
                        "--categorical", "income")
    assert as_categories.exit_code == 0, as_categories.output
