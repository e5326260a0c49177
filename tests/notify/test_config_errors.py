"""Notification settings fail at load time, naming the field, and never print a secret."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mape.config import load_settings
from mape.errors import ConfigError, PolicyError
from mape.plan.channels import check_channels
from mape.plan.loader import load_policies


def _config(tmp_path: Path, notifications: dict) -> Path:  # type: ignore[type-arg]
    path = tmp_path / "mape.yaml"
    path.write_text(yaml.safe_dump({"notifications": notifications}))
    return path


def test_channels_urls_events_and_retry_settings_load(tmp_path, monkeypatch):
    monkeypatch.setenv("MAPE_TEST_SLACK", "TokenA1234/TokenB5678/TokenC9012")
    settings = load_settings(_config(tmp_path, {
        "dashboard_url": "http://ops.example:8501",
        "timeout": 3, "max_attempts": 4, "retry_delay": "2m", "max_retry_delay": "30m", "budget": "10s",
        "channels": {
            "ops": {"urls": ["slack://${MAPE_TEST_SLACK}/#ops", "json://127.0.0.1:9000/hook"]},
            "ml-team": {"urls": ["mailto://bot:pw@example.com?to=ml@example.com"], "events": ["action_failed"]},
        },
    }))
    n = settings.notifications
    assert n.channels["ops"].events == ["awaiting_approval", "approval_expired", "escalation", "action_failed",
                                        "verification_failed"]
    assert n.channels["ml-team"].events == ["action_failed"]
    assert n.channels["ops"].urls[0] == "slack://${MAPE_TEST_SLACK}/#ops"  # kept unexpanded: `config show` is safe
    assert (n.timeout, n.max_attempts, n.retry_delay.total_seconds(), n.budget.total_seconds()) == (3, 4, 120, 10)
    assert "TokenB5678" not in settings.model_dump_json()


def test_an_unsupported_url_names_the_field_and_hides_the_rest_of_the_url(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_settings(_config(tmp_path, {"channels": {"ops": {"urls": ["json://127.0.0.1/x",
                                                                       "nosuchservice://s3cr3t-token@host"]}}}))
    message = str(caught.value)
    assert caught.value.field == "notifications.channels.ops.urls[1]"
    assert "Apprise does not support this URL" in message and "nosuchservice://… (rest hidden)" in message
    assert "s3cr3t" not in message


def test_an_unset_environment_variable_names_the_field_and_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("MAPE_TEST_UNSET_TOKEN", raising=False)
    with pytest.raises(ConfigError) as caught:
        load_settings(_config(tmp_path, {"channels": {"ops": {"urls": ["slack://${MAPE_TEST_UNSET_TOKEN}/#ops"]}}}))
    assert caught.value.field == "notifications.channels.ops.urls[0]"
    assert "environment variable MAPE_TEST_UNSET_TOKEN is not set" in str(caught.value)


@pytest.mark.parametrize(("notifications", "field"), [
    ({"channels": {"ops": {"urls": ["json://127.0.0.1/x"], "events": ["awaiting-approval"]}}},
     "notifications.channels.ops.events[0]"),
    ({"channels": {"ops": {"urls": []}}}, "notifications.channels.ops.urls"),
    ({"channels": {"ops": {"urls": ["json://127.0.0.1/x"]}}, "timeout": 0}, "notifications.timeout"),
    ({"chanels": {}}, "notifications.chanels"),
])
def test_other_mistakes_name_their_field(tmp_path, notifications, field):
    with pytest.raises(ConfigError) as caught:
        load_settings(_config(tmp_path, notifications))
    assert caught.value.field == field


POLICY = """\
apiVersion: mape/v1
kind: Policy
metadata: {{name: {name}}}
spec:
  when: "has(drift.share_drifted)"
  action: {action}
  notify: {notify}
"""


def test_a_policy_naming_an_unknown_channel_is_refused_with_the_field_and_position(tmp_path):
    (tmp_path / "good.yaml").write_text(POLICY.format(name="good", action="{type: retrain}", notify="[ops]"))
    (tmp_path / "typo.yaml").write_text(POLICY.format(name="typo", action="{type: retrain}", notify="[ops, opz]"))
    (tmp_path / "action.yaml").write_text(POLICY.format(
        name="action", action="{type: notify, params: {channels: [ml]}}", notify="[]"))
    result = check_channels(load_policies(tmp_path, known_actions=["retrain", "notify"]), ["ops"])

    assert [p.name for p in result.policies] == ["good"]
    by_field = {e.field: e for e in result.errors}
    assert set(by_field) == {"spec.notify[1]", "spec.action.params.channels[0]"}
    typo = by_field["spec.notify[1]"]
    assert isinstance(typo, PolicyError) and typo.source == str(tmp_path / "typo.yaml")
    assert "unknown notification channel 'opz' (did you mean 'ops'?); configured: ops" in str(typo)
    assert typo.line == 7
