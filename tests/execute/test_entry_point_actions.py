"""Action types from installed distributions (entry point group ``mape.actions``), found as pip would leave them.

The distributions are real: a package and a ``*.dist-info`` directory with
``entry_points.txt`` on ``sys.path`` (:mod:`tests.execute.plugin_dist`), read
by ``importlib.metadata``.
"""

from __future__ import annotations

import importlib.metadata
import logging
from pathlib import Path

import pytest
from sqlmodel import select

from knowledge.database import session_scope
from knowledge.tables import AuditEvent
from mape.config import Settings
from mape.controller import Controller
from mape.errors import PolicyError
from mape.execute import actions as _builtins  # noqa: F401  (registers retrain and rollback)
from mape.execute.registry import ActionRegistry, default_registry
from mape.plan.loader import check_policy_text, load_policy_text
from tests.execute.plugin_dist import plugins  # noqa: F401  (the fixture)


def _scale_policy(params: str = "{replicas: 3}", name: str = "scale-on-load") -> str:
    return ("apiVersion: mape/v1\nkind: Policy\nmetadata: {name: " + name + "}\nspec:\n"
            "  when: drift.share_drifted > 0.3\n"
            "  action:\n"
            "    type: scale-up\n"
            f"    params: {params}\n")


def _fresh() -> ActionRegistry:
    """The built-ins in a registry of the test's own: the default registry is never touched."""
    return default_registry.copy()


def test_the_plugin_distributions_are_installed_as_far_as_importlib_metadata_can_tell(plugins):
    found = {(e.dist.name, e.name, e.value) for e in importlib.metadata.entry_points(group="mape.actions")}
    assert found == {("acme-scaling", "scaling", "acme_scaling.actions"),
                     ("acme-scaling", "cache", "acme_scaling.extra:register"),
                     ("acme-broken", "half", "acme_broken.half"), ("acme-broken", "gone", "acme_broken.nothing")}


def test_a_module_and_a_register_function_bring_their_actions_named_by_distribution(plugins):
    registry = _fresh()
    registry.load_entry_points()

    assert {"scale-up", "scale-down", "warm-cache", "retrain", "rollback"} <= set(registry.names())
    assert registry.origin("scale-up") == "acme-scaling 1.0 (entry point scaling)"
    assert registry.origin("warm-cache") == "acme-scaling 1.0 (entry point cache)"
    assert registry.origin("retrain") == "built-in"
    spec = registry.get("scale-up")
    assert spec.description == "Add replicas to the model's serving deployment."
    assert spec.fn.__module__ == "acme_scaling.actions" and spec.fn(None, spec.params(replicas=2)) == {"replicas": 2}
    assert registry.conflicting_pairs() == {frozenset({"scale-up", "scale-down"})}
    assert "scale-up" not in default_registry  # loading into one registry leaves the default one alone


def test_a_broken_entry_point_is_reported_with_its_distribution_not_raised_and_leaves_nothing_half_registered(
        plugins, caplog):
    registry = _fresh()
    with caplog.at_level(logging.WARNING, logger="mape.execute.registry"):
        failures = registry.load_entry_points()

    assert sorted((f.distribution, f.name, f.value) for f in failures) == [
        ("acme-broken 0.1", "gone", "acme_broken.nothing"), ("acme-broken 0.1", "half", "acme_broken.half")]
    by_name = {f.name: f for f in failures}
    assert "ModuleNotFoundError: No module named 'acme_dependency_that_is_not_installed'" in by_name["half"].error
    assert "ModuleNotFoundError: No module named 'acme_broken.nothing'" in by_name["gone"].error
    assert str(by_name["gone"]).startswith(
        "entry point gone = acme_broken.nothing of distribution acme-broken 0.1 (mape.actions) failed to load")
    assert "half-done" not in registry  # registered before the import failed: all or nothing
    assert "scale-up" in registry  # the other distribution is unaffected
    assert registry.entry_point_failures == failures
    assert [r.getMessage() for r in caplog.records] == [str(f) for f in failures]


def test_loading_twice_loads_nothing_twice_and_a_second_registry_gets_an_imported_module_too(plugins):
    first = _fresh()
    first.load_entry_points()
    assert first.load_entry_points() == [] and len(first.entry_point_failures) == 2

    second = _fresh()  # acme_scaling.actions is imported already: its decorators do not run again
    second.load_entry_points()
    assert {"scale-up", "scale-down", "warm-cache"} <= set(second.names())
    assert second.get("scale-up") is first.get("scale-up")


def test_a_plugin_that_repeats_a_registered_type_is_refused_and_the_first_kept(plugins):
    registry = _fresh()
    registry.load_entry_points()
    entry = importlib.metadata.EntryPoint("again", "acme_scaling.actions", "mape.actions")

    again = ActionRegistry()
    again.register(registry.get("retrain"))
    again.register(registry.get("scale-up").__class__(name="scale-down", fn=len, params=registry.get("retrain").params))
    [failure] = again.load_entry_points(entry_points=[entry])

    assert "action type 'scale-down' is already registered (by len)" in failure.error
    assert failure.distribution == "an unknown distribution"
    assert again.names() == ["retrain", "scale-down"] and again.get("scale-down").fn is len


def test_a_policy_using_a_plugin_action_validates_against_its_parameter_model(plugins):
    registry = _fresh()
    registry.load_entry_points()
    known = registry.params_models()

    loaded = load_policy_text(_scale_policy(), "policies/scale.yaml", known_actions=known)
    assert (loaded.action, loaded.policy.spec.action.params) == ("scale-up", {"replicas": 3})

    with pytest.raises(PolicyError) as bad:
        load_policy_text(_scale_policy("{replicas: 0}"), "policies/scale.yaml", known_actions=known)
    error = bad.value
    assert (error.field, error.line, error.column) == ("spec.action.params.replicas", 8, 24)
    assert str(error).startswith("policies/scale.yaml:8:24: spec.action.params.replicas: "
                                 "Input should be greater than or equal to 1")

    loaded, errors = check_policy_text(_scale_policy("{replica: 3}"), "policies/scale.yaml", known_actions=known)
    assert loaded is None
    assert [str(e) for e in errors] == [
        "policies/scale.yaml:8:5: spec.action.params.replicas: Field required",  # at `params`, where it belongs
        "policies/scale.yaml:8:14: spec.action.params.replica: unknown parameter (did you mean 'replicas'?); "
        "scale-up takes: replicas",
    ]

    with pytest.raises(PolicyError, match="unknown action 'scale-up'"):  # without the plugin, no such action
        load_policy_text(_scale_policy(), "policies/scale.yaml", known_actions=_fresh().params_models())


def test_the_controller_loads_plugins_logs_a_broken_one_and_refuses_a_bad_param_with_its_line(
        plugins, tmp_path: Path):
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "scale.yaml").write_text(_scale_policy())
    (policies / "scale-bad.yaml").write_text(_scale_policy("{replicas: many}", name="scale-bad"))
    settings = Settings(db_url=f"sqlite:///{tmp_path / 'kb.db'}", policies_dir=policies,
                        artifacts_dir=tmp_path / "artifacts")

    controller = Controller(settings, actions=_fresh())
    try:
        assert [p.name for p in controller.policies] == ["scale-on-load"]
        assert len(controller.action_plugin_errors) == 2
        assert all("acme-broken 0.1" in e for e in controller.action_plugin_errors)
        [refusal] = controller.policy_errors
        assert refusal.startswith(f"{policies / 'scale-bad.yaml'}:8:24: spec.action.params.replicas: ")
        with session_scope(controller.engine) as session:
            [event] = session.exec(select(AuditEvent).where(AuditEvent.kind == "policy.refused")).all()
        assert (event.payload["line"], event.payload["column"]) == (8, 24)
    finally:
        controller.engine.dispose()
