"""The serving target a model's ``serving`` configuration describes.

Who calls it: the ``rescale`` effector (to scale) and the Monitor stage (to
read the replica counts every tick), so both see the same replicas:
:class:`~mape.serving.local.LocalReplicaSet` for ``target: local``,
:class:`~mape.serving.kubernetes.KubernetesDeployment` for ``target: kubernetes``.
The canary of a ``retrain`` (:mod:`mape.execute.canary`) asks for the
replicas that serve a candidate beside those (:func:`canary_target_for`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mape.config import ModelConfig
from mape.errors import CanaryNotSupportedError, ServingError
from mape.serving.target import ServingTarget

__all__ = ["canary_target_for", "target_for"]


def target_for(cfg: ModelConfig, serving_dir: Path,
               artifact: Callable[[], tuple[int, str]] | None = None) -> ServingTarget | None:
    """The model's serving target, or None when it has no ``serving`` section.

    Parameters
    ----------
    cfg : ModelConfig
        The managed model.
    serving_dir : Path
        Where local replica sets keep their state (``serving_dir`` in the settings).
    artifact : callable, optional
        Returns the version number and artifact URI new replicas serve (the
        production version). Without it a local target can be read but not
        scaled up. A Kubernetes Deployment's pods run what its pod template
        names: with ``serving.kubernetes.promote: patch``, its
        :meth:`~mape.serving.kubernetes.KubernetesDeployment.roll` sets
        ``artifact``'s version on the pod template; with ``pipeline`` it is
        ignored.
    """
    if cfg.serving is None:
        return None
    if cfg.serving.target == "kubernetes":
        assert cfg.serving.kubernetes is not None  # ServingConfig requires the section for this target
        from mape.serving.kubernetes import KubernetesDeployment  # the client itself is imported on first use

        return KubernetesDeployment.from_config(cfg.name, cfg.serving.kubernetes, artifact=artifact)

    def observe_only() -> tuple[int, str]:
        raise ServingError("is only observed here; scaling it needs the production version's artifact",
                           model=cfg.name)

    from mape.serving.local import LocalReplicaSet  # imported on use: model servers need none of it

    local = cfg.serving.local
    return LocalReplicaSet(cfg.name, Path(serving_dir), artifact or observe_only, port_range=local.port_range,
                           startup_timeout=local.startup_timeout.total_seconds())


def canary_target_for(cfg: ModelConfig, serving_dir: Path, artifact: Callable[[], tuple[int, str]]) -> ServingTarget:
    """The replicas that serve a canary candidate of the model beside its production replicas.

    For ``target: local``, a second replica set of the model (track
    ``canary``, its state under ``serving_dir/canary/``) whose new replicas
    serve what ``artifact`` names (the candidate); for ``target:
    kubernetes``, the Deployment ``serving.kubernetes.canary_deployment``
    (default ``<deployment>-canary``), whose pods run what its pod template
    names (``artifact``'s version once it is rolled, with ``promote: patch``).

    Raises
    ------
    CanaryNotSupportedError
        When the model has no ``serving`` section: nothing serves it here, so
        no share of its traffic can go to a candidate.
    """
    if cfg.serving is None:
        raise CanaryNotSupportedError(f"model {cfg.name} has no serving section, so no share of its replicas can "
                                      f"serve a candidate")
    if cfg.serving.target == "kubernetes":
        assert cfg.serving.kubernetes is not None  # ServingConfig requires the section for this target
        from mape.serving.kubernetes import KubernetesDeployment

        return KubernetesDeployment.from_config(cfg.name, cfg.serving.kubernetes, canary=True, artifact=artifact)
    from mape.serving.local import LocalReplicaSet

    local = cfg.serving.local
    return LocalReplicaSet(cfg.name, Path(serving_dir), artifact, port_range=local.port_range,
                           startup_timeout=local.startup_timeout.total_seconds(), track="canary")
