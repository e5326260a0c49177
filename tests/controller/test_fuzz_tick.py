"""A tick over a policy directory full of bad files plans with the good policies and reports the bad ones (property-based).

One small real world (the credit example, on SQLite and on PostgreSQL)
ticks every five minutes of logical time. Before each tick Hypothesis replaces the extra files of its
policy directory with new ones: mangled shipped policies, invalid YAML,
binary garbage, empty files, dangling symbolic links (an editor's lock file,
``.#name.yaml``, is one), directories named like policies. Each tick must
plan (no ``plan`` error), keep the good policies in force (``always`` decides
on every tick), and name each refused file in ``controller.policy_errors``.
"""

from __future__ import annotations

import shutil
from datetime import timedelta
from itertools import count
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mape.plan import is_policy_file
from tests.controller.world import make_world
from tests.plan.fuzzing import FUZZ, SHIPPED_TEXTS, any_text, mangled_documents

ALWAYS = """\
apiVersion: mape/v1
kind: Policy
metadata: {name: always}
spec:
  when: "true"
  action: {type: retrain}
  cooldown: 0s
  mode: dry-run
"""
GOOD = {"always", *(name.removesuffix(".yaml") for name in SHIPPED_TEXTS)}

contents = st.one_of(
    mangled_documents().map(lambda t: ("text", t)),
    any_text.map(lambda t: ("text", t)),
    st.binary(max_size=200).map(lambda b: ("bytes", b)),
    st.sampled_from([("text", ""), ("link", None), ("directory", None), ("lock", None)]),
)
suffixes = st.sampled_from([".yaml", ".yaml", ".yml", ".test.yaml", ".schema.yaml"])


def _clear(directory: Path) -> None:
    """Remove the files of the previous example (everything but the good policies)."""
    for path in directory.glob("*"):
        if path.name.startswith(("zz-", ".#zz-")):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()


def _write(directory: Path, name: str, kind: str, content: str | bytes | None) -> Path:
    path = directory / name
    if kind == "text":
        assert isinstance(content, str)
        path.write_bytes(content.encode("utf-8", "surrogatepass"))
    elif kind == "bytes":
        assert isinstance(content, bytes)
        path.write_bytes(content)
    elif kind == "link":
        path.symlink_to(directory / "missing-target.yaml")
    elif kind == "directory":
        path.mkdir()
    else:  # emacs: `.#name` links to user@host.pid while the file is being edited
        path = directory / f".#{name}"
        path.symlink_to("someone@host.4242")
    return path


@pytest.mark.slow
def test_a_tick_plans_with_the_good_policies_whatever_else_the_directory_holds(tmp_path: Path, db_url: str):
    policies = tmp_path / "policies"
    policies.mkdir()
    for name, text in SHIPPED_TEXTS.items():
        (policies / name).write_text(text)
    (policies / "always.yaml").write_text(ALWAYS)
    world = make_world(tmp_path / "world", policies, db_url=db_url, rows_per_hour=200)
    controller = world.controller
    world.serve_hour(1)
    ticks = count()

    @settings(FUZZ, max_examples=100)
    @given(files=st.lists(st.tuples(contents, suffixes), min_size=1, max_size=4))
    def tick_with(files: list[tuple[tuple[str, str | bytes | None], str]]) -> None:
        k = next(ticks)
        _clear(policies)
        written = [_write(policies, f"zz-{k:03d}-{i}{suffix}", kind, content)
                   for i, ((kind, content), suffix) in enumerate(files)]
        report = controller.tick(world.scenario.at(1) + timedelta(minutes=5 * k))

        assert not [e for e in report.errors if e.startswith("plan")], report.errors
        in_force = {p.name for p in controller.policies}
        assert GOOD <= in_force, controller.policy_errors
        assert ("always", "dry_run") in {(d.policy, d.status) for d in report.decisions}
        sources = {p.source for p in controller.policies}
        refused = "\n".join(controller.policy_errors)
        for path in written:
            if path.is_file() and not path.is_symlink() and is_policy_file(path):
                assert str(path) in sources or str(path) in refused, (path, refused)

    tick_with()


def test_an_editors_lock_file_among_the_policies_stops_nothing(tmp_path: Path):
    # Emacs marks a file being edited with a dangling link `.#name.yaml`; once, it failed the controller's start
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "always.yaml").write_text(ALWAYS)
    (policies / ".#always.yaml").symlink_to("someone@host.4242")
    (policies / "gone.yaml").symlink_to(policies / "deleted.yaml")
    world = make_world(tmp_path / "world", policies, rows_per_hour=200)
    assert [p.name for p in world.controller.policies] == ["always"]
    assert world.controller.policy_errors == []
    report = world.controller.tick(world.scenario.at(1))
    assert not [e for e in report.errors if e.startswith("plan")]
    assert [(d.policy, d.status) for d in report.decisions] == [("always", "dry_run")]
