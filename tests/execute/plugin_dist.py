"""Installed action plugins for tests: real distributions (a package and its ``*.dist-info``) on ``sys.path``.

``importlib.metadata`` finds a distribution by its ``*.dist-info`` directory
on ``sys.path``, whoever wrote it: :func:`install_plugins` writes two into a
test's temporary directory, exactly as pip would leave them, and puts that
directory first on ``sys.path`` (undone after the test, with the imported
modules).

- ``acme-scaling 1.0`` declares ``scaling = acme_scaling.actions`` (a module
  of ``@action`` functions: ``scale-up``, which names ``scale-down`` as
  conflicting, and ``scale-down``) and ``cache = acme_scaling.extra:register``
  (a function that registers ``warm-cache`` on the registry it is given).
- ``acme-broken 0.1`` declares ``half = acme_broken.half`` (registers
  ``half-done``, then fails to import a module) and ``gone =
  acme_broken.nothing`` (a module that does not exist).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from textwrap import dedent

import pytest

PACKAGES = ("acme_scaling", "acme_broken")

SCALING = '''\
"""Scaling actions for mape."""

from pydantic import BaseModel, ConfigDict, Field

from mape.execute.registry import action


class ScaleParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    replicas: int = Field(ge=1, le=100, description="How many replicas to add or remove.")


@action("scale-up", params=ScaleParams, conflicts=("scale-down",))
def scale_up(ctx, params):
    """Add replicas to the model's serving deployment."""
    return {"replicas": params.replicas}


@action("scale-down", params=ScaleParams)
def scale_down(ctx, params):
    """Remove replicas from the model's serving deployment."""
    return {"replicas": -params.replicas}
'''

EXTRA = '''\
from pydantic import BaseModel

from mape.execute.registry import action


class WarmParams(BaseModel):
    keys: int = 1000


def warm_cache(ctx, params):
    """Warm the feature cache."""
    return {"keys": params.keys}


def register(registry):
    action("warm-cache", params=WarmParams, registry=registry)(warm_cache)
'''

HALF = '''\
from pydantic import BaseModel

from mape.execute.registry import action


class NoParams(BaseModel):
    pass


@action("half-done", params=NoParams)
def half_done(ctx, params):
    """Registered before the import below fails."""
    return {}


import acme_dependency_that_is_not_installed  # noqa: E402,F401
'''


def _distribution(root: Path, name: str, version: str, entry_points: str) -> None:
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(dedent(entry_points))


def write_plugins(root: Path) -> Path:
    """Write both distributions under ``root``; returns ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for package, files in {"acme_scaling": {"actions.py": SCALING, "extra.py": EXTRA},
                           "acme_broken": {"half.py": HALF}}.items():
        (root / package).mkdir()
        (root / package / "__init__.py").write_text("")
        for name, text in files.items():
            (root / package / name).write_text(text)
    _distribution(root, "acme-scaling", "1.0", """\
        [mape.actions]
        scaling = acme_scaling.actions
        cache = acme_scaling.extra:register
        """)
    _distribution(root, "acme-broken", "0.1", """\
        [mape.actions]
        half = acme_broken.half
        gone = acme_broken.nothing
        """)
    return root


def _forget_modules() -> None:
    for name in [m for m in sys.modules if m.split(".")[0] in PACKAGES]:
        del sys.modules[name]


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Both plugin distributions installed (on ``sys.path``) for the test; gone afterwards."""
    root = write_plugins(tmp_path / "site-packages")
    _forget_modules()
    monkeypatch.syspath_prepend(str(root))
    yield root
    _forget_modules()
