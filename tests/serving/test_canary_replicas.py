"""A canary's replicas: how many for a share of the traffic, a second local replica set beside production's, rolling.

The replica sets run real model-server processes on loopback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from mape.errors import InvalidParameterError, ServingError
from mape.serving import LocalReplicaSet
from mape.serving.canary import canary_replicas, served_share
from tests.serving.conftest import store
from tests.serving.test_local_replica_set import predict, running

PORTS = (38300, 38399)  # apart from the other serving tests' ranges

MakeSet = Callable[..., LocalReplicaSet]


@pytest.mark.parametrize("stable, share, expected", [
    (9, 0.1, 1), (4, 0.2, 1), (4, 0.5, 4), (3, 0.5, 3), (2, 0.25, 1), (1, 0.1, 1), (1, 0.9, 9), (10, 0.3, 4),
])
def test_the_canary_gets_the_replica_count_nearest_its_share_and_at_least_one(stable: int, share: float, expected: int):
    replicas = canary_replicas(stable, share)
    assert replicas == expected
    # no other count (of at least one) comes nearer the share
    assert all(abs(served_share(stable, replicas) - share) <= abs(served_share(stable, k) - share) + 1e-12
               for k in range(1, 20))


@pytest.mark.parametrize("stable, share", [(0, 0.5), (2, 0.0), (2, 1.0), (2, -0.1), (True, 0.5), (2, "half")])
def test_a_canary_needs_production_replicas_and_a_share_strictly_between_0_and_1(stable, share):
    with pytest.raises(InvalidParameterError, match="parameter of canary_replicas must be"):
        canary_replicas(stable, share)


@pytest.fixture
def make_set(tmp_path: Path) -> Iterator[MakeSet]:
    made: list[LocalReplicaSet] = []

    def make(artifact: Callable[[], tuple[int, str]], **kwargs: object) -> LocalReplicaSet:
        replicas = LocalReplicaSet("credit", tmp_path / "serving", artifact, **{"port_range": PORTS, **kwargs})
        made.append(replicas)
        return replicas

    yield make
    pids = {r.pid for replicas in made for r in replicas.members()}
    for replicas in made:
        replicas.stop_all()
    assert not [pid for pid in pids if running(pid)]


@pytest.mark.slow  # real model-server processes: several seconds
def test_the_canary_track_runs_beside_production_with_files_of_its_own(
        make_set: MakeSet, artifact_uri: str, estimator: LogisticRegression, frame: pd.DataFrame, tmp_path: Path):
    candidate_uri = store(estimator, tmp_path / "artifacts" / "run-2")
    production = make_set(lambda: (1, artifact_uri))
    canary = make_set(lambda: (2, candidate_uri), track="canary")
    assert (str(production), str(canary)) == ("local replicas of credit", "local canary replicas of credit")
    assert repr(canary) == f"LocalReplicaSet('credit', {str(tmp_path / 'serving')!r}, track='canary')"
    rows = frame[["income", "debt"]].head(4).to_dict(orient="records")

    assert production.scale(2) == 2 and canary.scale(1) == 1
    assert (production.replicas(), canary.replicas()) == (2, 1)
    assert {predict(r.port, rows)["version"] for r in production.members()} == {1}
    assert [predict(r.port, rows)["version"] for r in canary.members()] == [2]
    assert (tmp_path / "serving" / "credit.json").exists()
    assert (tmp_path / "serving" / "canary" / "credit.json").exists()
    assert not {r.port for r in production.members()} & {r.port for r in canary.members()}

    # withdrawing the canary leaves production alone
    pids = [r.pid for r in production.members()]
    assert canary.scale(0) == 0
    assert [r.pid for r in production.members()] == pids and all(running(pid) for pid in pids)


@pytest.mark.slow  # real model-server processes: several seconds
def test_roll_replaces_replicas_of_another_version_new_ones_first(
        make_set: MakeSet, artifact_uri: str, estimator: LogisticRegression, frame: pd.DataFrame, tmp_path: Path):
    serving = {"version": (1, artifact_uri)}
    production = make_set(lambda: serving["version"])
    production.scale(2)
    old = production.members()
    rows = frame[["income", "debt"]].head(3).to_dict(orient="records")
    assert production.roll() == 0  # all serve the version named: nothing to replace

    serving["version"] = (2, store(estimator, tmp_path / "artifacts" / "run-2"))
    assert production.roll() == 2
    new = production.members()
    assert [r.version for r in new] == [2, 2] and not {r.pid for r in new} & {r.pid for r in old}
    assert not any(running(r.pid) for r in old)
    assert all(predict(r.port, rows)["version"] == 2 for r in new)
    assert production.roll() == 0

    # a version that cannot start: the replicas serving now are kept, the failure is raised
    serving["version"] = (3, (tmp_path / "missing").as_uri())
    with pytest.raises(ServingError, match="serving model credit"):
        production.roll()
    assert [r.pid for r in production.members()] == [r.pid for r in new] and all(running(r.pid) for r in new)


def test_a_track_is_a_lowercase_name():
    with pytest.raises(InvalidParameterError, match="The 'track' parameter of LocalReplicaSet must be None or a"):
        LocalReplicaSet("credit", Path("/tmp"), lambda: (1, ""), track="../up")
