"""The one settings model of mape, read from ``mape.yaml`` and ``MAPE_*`` variables.

Who calls it: the CLI loads settings once (:func:`load_settings`) and hands
them to the controller, which hands the relevant parts to each stage. Nothing
else reads the environment.

Precedence, highest first: ``MAPE_*`` environment variables (nested fields
with ``__``, e.g. ``MAPE_PREFECT__TELEMETRY=true``), the YAML file, defaults.
Relative paths in the file are resolved against the file's directory, so a
configuration works from any working directory.

Every field is documented here; ``mape config show`` prints the effective
values.
"""

from __future__ import annotations

import importlib.util
import os
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from knowledge.database import DEFAULT_SQLITE_CACHE_MIB
from mape._util.timeutil import parse_duration
from mape.errors import ConfigError

DEFAULT_CONFIG_FILE = "mape.yaml"


def _duration(value: Any) -> timedelta:
    return parse_duration(value)


def _not_negative(value: timedelta, info: ValidationInfo) -> timedelta:
    """A duration field that may be 0 but not less (used as ``field_validator(name)(_not_negative)``)."""
    if value < timedelta(0):
        raise ValueError(f"{info.field_name} must not be negative, got {value}")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- data sources


class FileSourceConfig(_Strict):
    """Rows in Parquet or CSV files: one file, a directory of files, or a glob."""

    kind: Literal["parquet", "csv"]
    path: str = Field(description="File, directory or glob; relative paths are resolved against the config file.")
    timestamp_column: str = Field("timestamp", description="Column holding the event time of each row.")
    id_column: str = Field("id", description="Column holding the row's unique id (joins predictions to labels).")
    cache_mb: float = Field(64, ge=0, description=(
        "Memory (MiB) for decoded Parquet files kept while unchanged (modification time, size, inode), so ticks "
        "do not decode the same files again; least recently used first out; 0 turns it off."))


class SqlSourceConfig(_Strict):
    """Rows in a table of any SQLAlchemy-reachable database."""

    kind: Literal["sql"]
    url: str = Field(description="SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db.")
    table: str = Field(description="Table name, optionally schema-qualified (schema.table).")
    timestamp_column: str = "timestamp"
    id_column: str = "id"


SourceConfig = Annotated[FileSourceConfig | SqlSourceConfig, Field(discriminator="kind")]


# --------------------------------------------------------------------------- managed models


class FeaturesConfig(_Strict):
    numeric: list[str] = Field(default_factory=list, description="Numeric feature columns (two-sample KS).")
    categorical: list[str] = Field(default_factory=list, description="Categorical feature columns (chi-squared).")

    @property
    def all(self) -> list[str]:
        return [*self.numeric, *self.categorical]


class TrainingConfig(_Strict):
    entrypoint: str = Field(description="Import path 'package.module:function' of the training function.")
    params: dict[str, Any] = Field(default_factory=dict, description="Passed to the entrypoint as request.params.")

    @field_validator("entrypoint")
    @classmethod
    def _import_path(cls, value: str) -> str:
        module, sep, attr = value.partition(":")
        if not sep or not module or not attr:
            raise ValueError("must be an import path of the form 'package.module:function'")
        return value


class DriftConfig(_Strict):
    window: timedelta = Field(timedelta(hours=1), description="Length of the current window of the inference log.")
    alpha: float = Field(0.05, gt=0, lt=1, description="False-discovery rate across features (Benjamini-Hochberg).")
    min_samples: int = Field(100, ge=2, description="Fewer rows than this in either window: no drift test is run.")
    numeric_test: Literal["ks", "cvm"] = Field(
        "ks", description="Test of numeric features: Kolmogorov-Smirnov, or Cramér-von Mises (more sensitive to "
                          "changes spread over the whole distribution).")
    numeric_effect: Literal["wasserstein", "psi", "js"] = Field(
        "wasserstein", description="Effect size of numeric features: Wasserstein-1 distance in reference standard "
                                   "deviations, or PSI or Jensen-Shannon distance on 20 reference-quantile bins.")
    categorical_effect: Literal["js", "psi"] = Field(
        "js", description="Effect size of categorical features: Jensen-Shannon distance (base 2) or PSI.")
    effect_floors: dict[Literal["wasserstein", "psi", "js"], Annotated[float, Field(ge=0)]] = Field(
        default_factory=lambda: {"wasserstein": 0.1, "psi": 0.1, "js": 0.05},
        description="A significant feature drifted only if its effect size is at least this; kinds not given keep "
                    "their default. Defaults: wasserstein 0.1 (a tenth of a standard deviation), psi 0.1 (the "
                    "usual 'no significant change' bound, about a 0.3-sigma shift), js 0.05 (about 0.12 sigma). "
                    "Without a floor, large windows flag negligible shifts (KS flags a 0.02-sigma shift every "
                    "time at a million rows); 0 turns a floor off.",
    )
    backend: Literal["builtin", "alibi"] = Field(
        "builtin", description="Who computes the tests: mape's own detectors, or alibi-detect's (KSDrift, CVMDrift, "
                               "ChiSquareDrift), with the same correction, effect sizes and floors. alibi-detect is an "
                               "optional extra under the Business Source License (pip install 'mape[alibi]'; it "
                               "needs numpy < 2).")

    _d = field_validator("window", mode="before")(_duration)

    @field_validator("backend")
    @classmethod
    def _backend_installed(cls, value: str) -> str:
        if value == "alibi" and importlib.util.find_spec("alibi_detect") is None:  # looked up, not imported
            raise ValueError("alibi-detect is not installed; pip install 'mape[alibi]'")
        return value

    @field_validator("effect_floors")
    @classmethod
    def _floors_over_defaults(cls, value: dict[str, float]) -> dict[str, float]:
        defaults = cls.model_fields["effect_floors"].get_default(call_default_factory=True)
        return {**defaults, **value}


class PerformanceConfig(_Strict):
    window: timedelta = Field(timedelta(hours=2), description="Predictions made in this window and labelled so far are scored.")
    min_samples: int = Field(100, ge=1, description="Fewer labelled predictions than this: the metric is not reported.")

    _d = field_validator("window", mode="before")(_duration)


class QualityConfig(_Strict):
    """Data-quality checks of the drift window, run before drift (:mod:`mape.monitor.sensors.quality`).

    A rate counts as a spike when it rose past its threshold and a one-sided
    two-proportion z-test at ``alpha`` says the rise is not noise.
    """

    enabled: bool = Field(True, description="Check schema, null rates, ranges and categories every tick (quality.* "
                                            "in policies).")
    null_rate_increase: float = Field(0.05, ge=0, le=1, description="A feature's null rate rising by more than this "
                                                                    "(and significantly) is a null spike.")
    out_of_range_increase: float = Field(
        0.01, ge=0, le=1, description="A numeric feature's share of values outside the reference range exceeding the "
                                      "reference's own share by more than this (and significantly) is an "
                                      "out-of-range spike.")
    unseen_category_share: float = Field(
        0.01, ge=0, le=1, description="A categorical feature with a larger share of values the reference never had "
                                      "is flagged.")
    range_quantiles: tuple[float, float] = Field(
        (0.001, 0.999), description="The reference range of a numeric feature: these quantiles of its values.")
    min_samples: int = Field(100, ge=1, description="Fewer rows than this in either window: no verdict.")
    alpha: float = Field(0.01, gt=0, lt=1, description="Level of the z-tests (and of the test that tells a column "
                                                       "with no value from a sparse one).")

    @field_validator("range_quantiles")
    @classmethod
    def _ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not 0 <= low < high <= 1:
            raise ValueError(f"range_quantiles must be (low, high) with 0 <= low < high <= 1, got {list(value)}")
        return value


class ReferenceConfig(_Strict):
    """Which rows the drift and data-quality sensors compare each window with (:mod:`mape.monitor.reference`).

    Every reference is stored in the knowledge base as a numbered version of
    its model version (table ``reference_window``), and every drift
    observation names the reference version it was measured against. A new
    production version starts its own references.

    - ``fixed`` (default): the production version's training window of the
      inference log, taken once.
    - ``rolling``: the ``length`` of inference log ending ``lag`` before the
      tick, retaken every ``refresh``; only rows since the version's
      promotion count, and while they are fewer than ``drift.min_samples``
      the training window stands in.
    - ``reservoir``: a uniform sample of ``size`` rows of everything the
      monitor has seen of this version (seeded with the training window,
      Vitter's algorithm R), snapshotted as a new version every ``refresh``;
      the snapshot's rows are stored in the knowledge base.
    """

    kind: Literal["fixed", "rolling", "reservoir"] = Field("fixed", description="fixed, rolling or reservoir.")
    length: timedelta = Field(timedelta(days=7), description="rolling: length of the reference window, e.g. 7d.")
    lag: timedelta | None = Field(
        None, description="rolling: gap between the reference's end and the tick; unset: the drift window, so the "
                          "reference ends where the current window starts.")
    refresh: timedelta = Field(timedelta(days=1), description="rolling, reservoir: age at which a new reference "
                                                             "version is taken, e.g. 1d.")
    size: int = Field(5000, ge=2, le=1_000_000, description="reservoir: rows in the sample; fixed: the most rows of "
                                                            "the training window stored with the reference (they "
                                                            "stand in once the inference log no longer holds them).")
    seed: int = Field(0, ge=0, description="reservoir, fixed: seed of the sampling (with the version and rows seen).")
    keep: int = Field(10, ge=1, description="rolling, reservoir: stored samples kept per model version; older "
                                            "versions keep their row (bounds, size, fingerprint) without the sample.")

    _d = field_validator("length", "refresh", mode="before")(_duration)

    @field_validator("lag", mode="before")
    @classmethod
    def _lag_duration(cls, value: Any) -> timedelta | None:
        return None if value is None else _duration(value)

    @field_validator("length", "refresh")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError(f"must be a positive duration, got {value}")
        return value

    @field_validator("lag")
    @classmethod
    def _lag_not_negative(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value < timedelta(0):
            raise ValueError(f"must not be negative, got {value}")
        return value


class PromotionConfig(_Strict):
    evaluation_window: timedelta = Field(
        timedelta(hours=1),
        description="Champion/challenger window: the most recent labelled data, held out from training.",
    )
    margin: float = Field(0.0, ge=0, le=1, description="The candidate may be at most this much worse than production "
                                                      "(accuracy for classifiers, mean absolute error for regressors).")
    min_samples: int = Field(100, ge=1, description="Fewer labelled rows in the evaluation window: no promotion.")
    test: Literal["noninferiority", "point"] = Field(
        "noninferiority", description="noninferiority: promote only if the one-sided confidence bound of the paired "
                                      "difference (same rows, both models) clears -margin, so a small window cannot "
                                      "promote a worse model by luck; point: compare the two numbers alone.")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="Level of the one-sided confidence bound.")
    fairness_bound: float | None = Field(
        0.05, ge=0, le=1, description="Models with a fairness section: the candidate's worst group gap (fairness_metric "
                                      "over the sensitive attributes) may exceed production's by at most this; none: "
                                      "no fairness gate.")
    fairness_metric: Literal["equalized_odds_difference", "demographic_parity_difference",
                             "equal_opportunity_difference"] = Field(
        "equalized_odds_difference", description="The group gap the fairness gate compares.")

    _d = field_validator("evaluation_window", mode="before")(_duration)


class ScaleBounds(_Strict):
    """How far and how fast one model's replicas may be scaled (the ``rescale`` action honours them).

    Attributes
    ----------
    min_replicas : int
        Fewest replicas, at least 0 (0 lets a model scale to zero).
    max_replicas : int
        Most replicas, at least 1 and at least ``min_replicas``.
    max_step : int
        Most replicas added or removed by one action.
    scale_down_stabilization : timedelta
        After a scale-up, no scale-down until this long has passed (the
        Kubernetes HPA's scale-down stabilization window); ``"5m"``, ``"300s"``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_replicas: int = Field(1, ge=0, description="Fewest replicas (0 allows scale to zero).")
    max_replicas: int = Field(4, ge=1, description="Most replicas.")
    max_step: int = Field(1, ge=1, description="Most replicas added or removed in one action.")
    scale_down_stabilization: timedelta = Field(
        timedelta(minutes=5), description="No scale-down until this long after the last scale-up, e.g. 5m.")

    _d = field_validator("scale_down_stabilization", mode="before")(_duration)

    _n = field_validator("scale_down_stabilization")(_not_negative)

    @model_validator(mode="after")
    def _min_not_above_max(self) -> "ScaleBounds":
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) must not exceed max_replicas ({self.max_replicas})")
        return self


class LocalServingConfig(_Strict):
    """The embedded serving target: model-server processes on 127.0.0.1, started and stopped by the engine."""

    port_range: tuple[int, int] = Field((18500, 18999), description="Loopback ports the replicas may listen on.")
    startup_timeout: timedelta = Field(timedelta(seconds=30),
                                       description="A replica that does not answer its health check by then failed.")

    _d = field_validator("startup_timeout", mode="before")(_duration)

    @model_validator(mode="after")
    def _ports(self) -> "LocalServingConfig":
        low, high = self.port_range
        if not 1024 <= low <= high <= 65535:
            raise ValueError(f"port_range must be two ports with 1024 <= low <= high <= 65535, got {list(self.port_range)}")
        return self


_K8S_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"  # a DNS-1123 subdomain


class KubernetesServingConfig(_Strict):
    """A Kubernetes Deployment whose ``scale`` subresource the ``rescale`` action patches.

    Credentials, first match wins: ``api_server`` (with a bearer token from the
    environment variable ``token_env``, if named), else the pod's service
    account (``in_cluster: true``), else a kubeconfig file (``kubeconfig``, or
    ``$KUBECONFIG``, or ``~/.kube/config``) and its ``context``.
    """

    namespace: str = Field("default", max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
                           description="Namespace of the Deployment.")
    deployment: str = Field(max_length=253, pattern=_K8S_NAME, description="Name of the Deployment to scale.")
    kubeconfig: Path | None = Field(None, description="Kubeconfig file; none: $KUBECONFIG or ~/.kube/config. "
                                                       "Relative paths are resolved against the config file.")
    context: str | None = Field(None, description="Kubeconfig context; none: the file's current context.")
    in_cluster: bool = Field(False, description="Use the pod's service account (mape runs inside the cluster).")
    api_server: str | None = Field(None, pattern=r"^https?://[^/\s]+/?$",
                                   description="API server URL, e.g. https://10.0.0.1:6443; instead of a kubeconfig.")
    token_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                                  description="Environment variable holding the bearer token for api_server.")
    ca_cert: Path | None = Field(None, description="CA bundle that signed api_server's certificate.")
    verify_tls: bool = Field(True, description="Check api_server's TLS certificate (turn off only for tests).")
    request_timeout: timedelta = Field(timedelta(seconds=10),
                                       description="How long one API request may take, e.g. 10s.")
    endpoint: str | None = Field(None, description="URL clients reach the model at (its Service or Ingress); "
                                                    "reported while any replica is ready.")
    canary_deployment: str | None = Field(
        None, max_length=253, pattern=_K8S_NAME,
        description="The Deployment whose pods serve a canary candidate beside this one (a Service selecting both "
                    "splits the traffic by replicas); none: '<deployment>-canary'.")
    promote: Literal["patch", "pipeline"] = Field(
        "patch", description="Who points the Deployments' pod templates at a model version. patch: mape sets the "
                             "model reference (env MAPE_MODEL_VERSION and MAPE_ARTIFACT_URI of the model's container, "
                             "and mape.io/ annotations) on the canary Deployment when a canary starts and on this "
                             "Deployment when the canary is promoted, so production serves the new version at once. "
                             "pipeline: a delivery pipeline owns both pod templates; mape changes only replica "
                             "counts, and production serves the new version once the pipeline rolls it out.")
    container: str | None = Field(
        None, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="The container of the pod template that serves the model (promote: patch); none: the first.")
    rollout_timeout: timedelta = Field(
        timedelta(seconds=60), description="How long a promotion waits for this Deployment's pods to serve the new "
                                           "version before the canary's replicas are withdrawn anyway, e.g. 60s "
                                           "(promote: patch; 0s: do not wait).")

    _d = field_validator("request_timeout", "rollout_timeout", mode="before")(_duration)

    @field_validator("request_timeout")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError(f"request_timeout must be positive, got {value}")
        return value

    _n = field_validator("rollout_timeout")(_not_negative)

    @model_validator(mode="after")
    def _one_way_in(self) -> "KubernetesServingConfig":
        if self.in_cluster and self.api_server is not None:
            raise ValueError("in_cluster and api_server are two ways to reach the API server; give one of them")
        if (self.in_cluster or self.api_server is not None) and (self.kubeconfig or self.context):
            other = "kubeconfig" if self.kubeconfig else "context"
            raise ValueError(f"{other} is for a kubeconfig file; it cannot be combined with "
                             f"{'in_cluster' if self.in_cluster else 'api_server'}")
        if self.token_env is not None and self.api_server is None:
            raise ValueError("token_env names the token for api_server; give api_server too")
        if self.canary_deployment is not None and self.canary_deployment == self.deployment:
            raise ValueError(f"canary_deployment must name another Deployment than deployment "
                             f"({self.deployment!r}): the canary's replicas are scaled apart from production's")
        return self

    @property
    def canary(self) -> str:
        """The name of the canary Deployment: ``canary_deployment``, or ``<deployment>-canary``."""
        return self.canary_deployment or f"{self.deployment}-canary"


class ServingConfig(_Strict):
    """Where a model serves predictions, and how its replicas may be scaled."""

    target: Literal["local", "kubernetes"] = Field(
        "local", description="The serving target: local (model-server processes on loopback ports) or kubernetes "
                             "(a Deployment, scaled through its scale subresource; needs the kubernetes section).")
    replicas: ScaleBounds = Field(default_factory=ScaleBounds)
    local: LocalServingConfig = Field(default_factory=LocalServingConfig)
    kubernetes: KubernetesServingConfig | None = Field(
        None, description="The Deployment of a kubernetes target (pip install 'mape[kubernetes]').")

    @model_validator(mode="after")
    def _target_has_its_section(self) -> "ServingConfig":
        if self.target == "kubernetes" and self.kubernetes is None:
            raise ValueError("target kubernetes needs a kubernetes section naming at least the deployment")
        if self.target != "kubernetes" and self.kubernetes is not None:
            raise ValueError(f"a kubernetes section is given but target is {self.target!r}; "
                             f"set target: kubernetes or remove the section")
        return self


class GPUSensorConfig(_Strict):
    """The GPUs that serve or train a model, read every tick by :class:`mape.monitor.sensors.gpu.GPUSensor`."""

    devices: list[Annotated[str, Field(pattern=r"^(?:\d+|(?:GPU|MIG)-\S+)$")]] = Field(
        default_factory=list,
        description="NVML indices as nvidia-smi numbers them ('0'; not CUDA's order), GPU UUIDs ('GPU-...') or MIG "
                    "instance UUIDs ('MIG-...'); empty: every GPU of the machine (whole GPUs, not MIG instances).")
    retry_unavailable_after: timedelta = Field(
        timedelta(minutes=10), ge=timedelta(0),
        description="Without a driver (or when NVML fails to start) the sensor reports itself unavailable and tries "
                    "again this long after, e.g. 10m.")

    _d = field_validator("retry_unavailable_after", mode="before")(_duration)


#: The fields each carbon intensity provider reads (besides ``provider`` and ``horizon``).
_CARBON_FIELDS_OF: dict[str, tuple[str, ...]] = {
    "series": ("path", "repeat"),
    "codecarbon": ("country_iso_code",),
    "electricitymaps": ("zone", "token_env", "base_url", "timeout", "cache_ttl"),
    "uk": ("region", "base_url", "timeout", "cache_ttl"),
}


class PriceConfig(_Strict):
    """Where the electricity price forecast comes from: ``price`` in a deferred action's ``defer.objective``.

    A file of published prices (a day-ahead market's, dropped there by a
    daily job): first column a timestamp, second the price, CSV or Parquet,
    5-minute to hourly; negative prices are allowed. It is re-read when it
    changes (:class:`mape.plan.scheduling.prices.PriceSeries`).
    """

    path: Path = Field(description="The CSV or Parquet price series (time, price).")
    unit: str = Field("EUR/MWh", min_length=1, description="The prices' unit, for messages and evidence.")
    repeat: bool = Field(False, description="Repeat the series outside its time span (a typical week, for demos).")


class AccessConfig(_Strict):
    """Who may see and change what: sign-in for the dashboard and the CLI's state-changing commands.

    With a users file, every person signs in (the dashboard's form, or the
    CLI's ``--user`` with ``MAPE_PASSWORD`` or a prompt) and acts in the role
    the file gives them (:mod:`mape.access`). Without one, the dashboard
    refuses to show anything and the CLI acts as the local operator, an admin:
    whoever can run it on this machine holds the keys anyway.
    """

    users_file: Path | None = Field(
        None, description="The users file (names, roles, salted password hashes) written by `mape users add`.")
    oidc: OidcConfig | None = Field(
        None, description="The dashboard's OpenID Connect sign-in (Streamlit's st.login); roles still come from "
                          "the users file, matched on a claim of the identity token.")


class OidcConfig(_Strict):
    """Single sign-on for the dashboard through Streamlit's OpenID Connect login (``st.login``).

    The identity provider's client is configured where Streamlit reads it:
    ``[auth]`` (or ``[auth.<provider>]``) in ``.streamlit/secrets.toml``, with
    ``redirect_uri``, ``cookie_secret``, ``client_id``, ``client_secret`` and
    ``server_metadata_url``. A person the provider signs in still needs an
    entry in the users file, named by ``claim`` (``mape users add
    ann@example.com --role approver --oidc-only``): the provider says who they
    are, the users file what they may do.
    """

    provider: str | None = Field(
        None, min_length=1, description="The [auth.<provider>] section to use; none: the [auth] section itself.")
    claim: str = Field("email", min_length=1, description="The identity token's claim matched to users file names.")
    label: str = Field("Sign in with single sign-on", min_length=1, description="The sign-in button's text.")


class CarbonConfig(_Strict):
    """Where the grid's carbon intensity comes from: the ``carbon.*`` signals policies read.

    ``series`` reads a CSV or Parquet trace (a perfect forecast: for demos and
    backtests); ``codecarbon`` is codecarbon's annual figure for a country (a
    constant, offline; the fallback); ``electricitymaps`` and ``uk`` ask the
    Electricity Maps API (a token) or the GB Carbon Intensity API (none).
    Each provider reads only its own fields; setting another's is an error.
    """

    provider: Literal["series", "codecarbon", "electricitymaps", "uk"] = Field(
        "codecarbon", description="series (a trace file), codecarbon (annual per-country constant), "
                                  "electricitymaps (Electricity Maps API v3) or uk (GB Carbon Intensity API).")
    path: Path | None = Field(None, description="series: the CSV or Parquet trace (time, gCO2/kWh).")
    repeat: bool = Field(False, description="series: repeat the trace outside its time span (the shipped one is "
                                            "52 weeks, so the weekly pattern survives).")
    country_iso_code: str | None = Field(
        None, pattern=r"^[A-Za-z]{3}$",
        description="codecarbon: three-letter country code, e.g. DEU; unset or unknown: the world average.")
    zone: str | None = Field(None, min_length=1, description="electricitymaps: the zone key, e.g. DE or US-CAL-CISO.")
    region: int | None = Field(None, ge=1, description="uk: region id (13 is London); unset: Great Britain.")
    token_env: str = Field(
        "ELECTRICITYMAPS_API_TOKEN", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="electricitymaps: the NAME of the environment variable holding the API token (the token "
                    "itself never goes in the file).")
    base_url: str | None = Field(None, description="electricitymaps, uk: another address of the API (a proxy, "
                                                   "a test server); unset: the public one.")
    timeout: float = Field(5.0, gt=0, le=120, description="electricitymaps, uk: seconds to connect, and again to read.")
    cache_ttl: timedelta = Field(timedelta(minutes=5), description="electricitymaps, uk: how long an answer (or a "
                                                                   "failure) is reused; one request per period.")
    horizon: timedelta = Field(timedelta(hours=12), description="How far ahead carbon.forecast_min and "
                                                                "carbon.forecast_mean look.")

    _d = field_validator("cache_ttl", "horizon", mode="before")(_duration)

    @model_validator(mode="after")
    def _fields_of_provider(self) -> "CarbonConfig":
        if self.provider == "series" and self.path is None:
            raise ValueError("provider 'series' needs 'path', the trace file")
        if self.provider == "electricitymaps" and self.zone is None:
            raise ValueError("provider 'electricitymaps' needs 'zone', e.g. DE")
        if self.provider == "electricitymaps" and not os.environ.get(self.token_env):
            raise ValueError(f"provider 'electricitymaps' reads its token from the environment variable "
                             f"{self.token_env} ('token_env'), which is not set")
        own = {"provider", "horizon", *_CARBON_FIELDS_OF[self.provider]}
        foreign = sorted(name for name in self.model_fields_set - own)
        if foreign:
            readers = {name: [p for p, names in _CARBON_FIELDS_OF.items() if name in names] for name in foreign}
            detail = "; ".join(f"'{name}' is read by {' and '.join(readers[name])}" for name in foreign)
            raise ValueError(f"provider {self.provider!r} does not read {', '.join(map(repr, foreign))} ({detail})")
        if self.cache_ttl < timedelta(0):
            raise ValueError(f"cache_ttl must not be negative, got {self.cache_ttl}")
        if self.horizon <= timedelta(0):
            raise ValueError(f"horizon must be longer than 0, got {self.horizon}")
        return self


#: The context roots a sensor's metric may fall under (``<root>.<key>``): the measured roots that
#: :data:`mape.plan.fields.CONTEXT_FIELDS` declares (config must not import the plan stage; a test checks they agree).
METRIC_ROOTS: tuple[str, ...] = ("drift", "performance", "fairness", "gpu", "carbon", "serving", "quality")


class PrometheusConfig(_Strict):
    """Metrics read from a Prometheus server every tick (:class:`mape.monitor.sensors.prometheus.PrometheusSensor`).

    Each entry of ``queries`` maps a metric name (``<root>.<key>``, e.g.
    ``serving.latency_p95_ms``) to a PromQL instant query; ``{model}`` in a
    query is replaced by the model's name, escaped for a double-quoted label
    value, e.g. ``sum(rate(mape_model_server_requests_total{model="{model}"}[5m]))``.
    A query must give one number: a scalar, or a vector of exactly one
    series (aggregate with ``sum``/``max``).
    """

    url: str = Field(pattern=r"^https?://\S+$",
                     description="Base URL of the Prometheus server, e.g. http://127.0.0.1:9090 (its HTTP API "
                                 "lives under /api/v1).")
    queries: dict[str, Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]] = Field(
        min_length=1,
        description="Metric name (<root>.<key>, root one of drift, performance, fairness, gpu, carbon, serving, "
                    "quality) to a PromQL instant query; {model} stands for the model's name.")
    timeout: timedelta = Field(timedelta(seconds=5), description="Per query: to connect, and again to read, e.g. 5s.")

    _d = field_validator("timeout", mode="before")(_duration)

    @field_validator("queries")
    @classmethod
    def _metric_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            root, dot, key = name.partition(".")
            if not (dot and root and key.isidentifier() and key.isascii() and key == key.lower()):
                raise ValueError(f"metric name {name!r} must be <root>.<key>, the key a lower-case identifier, "
                                 f"e.g. serving.latency_p95_ms")
            if root not in METRIC_ROOTS:
                raise ValueError(f"metric name {name!r} has an unknown root {root!r}; known: {', '.join(METRIC_ROOTS)}")
        return value

    @field_validator("timeout")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if not timedelta(0) < value <= timedelta(minutes=2):
            raise ValueError(f"timeout must be longer than 0 and at most 2m, got {value}")
        return value


class FairnessConfig(_Strict):
    """Which columns are protected attributes, and how :class:`mape.monitor.sensors.fairness.FairnessSensor` compares
    their groups on a model's labelled window (the ``fairness.*`` signals policies read)."""

    sensitive: list[Annotated[str, StringConstraints(min_length=1)]] = Field(
        min_length=1, description="Columns of the labelled window holding the protected attributes, e.g. [sex, age_band].")
    min_group_size: int = Field(50, ge=1, description="Groups with fewer labelled rows are reported as too small and "
                                                      "take no part in the gaps.")
    intersections: bool = Field(True, description="With two or more sensitive columns, also compare the groups of "
                                                  "their intersection (e.g. sex & age_band).")
    n_bootstrap: int = Field(200, ge=0, description="Bootstrap resamples for the confidence intervals of the gaps; "
                                                    "0: no intervals.")
    confidence: float = Field(0.95, gt=0, lt=1, description="Level of the confidence intervals.")
    window: timedelta = Field(timedelta(days=1), description="Predictions made in this window and labelled so far "
                                                             "are compared, e.g. 1d.")

    _d = field_validator("window", mode="before")(_duration)

    @field_validator("sensitive")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        repeated = sorted({name for name in value if value.count(name) > 1})
        if repeated:
            raise ValueError(f"sensitive columns must be distinct; repeated: {', '.join(repeated)}")
        return value

    @field_validator("window")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError(f"window must be longer than 0, got {value}")
        return value


class ModelConfig(_Strict):
    """One managed model: where its data is, how to train it, how to judge it."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="Unique name of the managed model.")
    owner: str = ""
    description: str = ""
    labels: dict[str, str] = Field(default_factory=dict, description="Free labels; policy selectors match on them.")
    task: Literal["classification", "regression"] = "classification"
    features: FeaturesConfig
    inference: SourceConfig = Field(description="The inference log: features, prediction, and optionally the model version.")
    prediction_column: str = "prediction"
    score_column: str | None = Field(
        None, description="Column of the inference log with the predicted probability of class 1 (binary "
                          "classifiers): enables ROC AUC, log loss and the label-free accuracy estimate.")
    version_column: str | None = Field(
        "model_version", description="Column naming the version that served each row; null if the log has none."
    )
    labels_source: SourceConfig = Field(description="Ground truth, joined to predictions by id whenever it arrives.")
    label_column: str = "label"
    training: TrainingConfig
    drift: DriftConfig = DriftConfig()
    quality: QualityConfig = Field(
        QualityConfig(), description="Data-quality checks of the drift window (schema, null rates, ranges, "
                                     "categories), run before drift.")
    reference: ReferenceConfig = Field(
        ReferenceConfig(), description="The reference the drift and quality sensors compare with: fixed (the "
                                       "training window), rolling or reservoir; versioned in the knowledge base.")
    performance: PerformanceConfig = PerformanceConfig()
    promotion: PromotionConfig = PromotionConfig()
    serving: ServingConfig | None = Field(
        None, description="How the model is served; needed by the rescale action (none: it cannot be rescaled).")
    fairness: FairnessConfig | None = Field(
        None, description="Protected attributes to compare groups on (fairness.* in policies); none: no fairness "
                          "sensor. The columns must be in the inference log.")
    gpu: GPUSensorConfig | None = Field(
        None, description="The GPUs serving or training the model, read every tick (gpu.* in policies); none: no GPU "
                          "sensor for it.")
    fallback_for: timedelta = Field(
        timedelta(minutes=15),
        description="A sensor of this model that fails writes its last good summary again, at the tick's time, if "
                    "that value is younger than this (e.g. 15m); older, it writes nothing and the signal goes "
                    "stale. 0: no fallback.")

    _d = field_validator("fallback_for", mode="before")(_duration)

    _n = field_validator("fallback_for")(_not_negative)


# --------------------------------------------------------------------------- analyze rules


class SymptomRule(_Strict):
    """Turns one observed metric into a symptom, like a Prometheus alerting rule.

    A symptom opens when the metric crosses ``enter`` on ``for_ticks``
    consecutive ticks, and closes when it is back past ``exit`` on
    ``clear_ticks`` consecutive ticks (hysteresis: ``exit`` sits on the safe
    side of ``enter``, so a metric hovering at the threshold does not flap).
    """

    symptom: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="Symptom kind, e.g. data_drift; policies see symptoms.<kind>.")
    metric: str = Field(description="Observation metric, e.g. drift.share_drifted or performance.accuracy_drop.")
    direction: Literal["above", "below"] = Field("above", description="Bad values are above (or below) the threshold.")
    enter: float
    exit: float
    for_ticks: int = Field(1, ge=1, alias="for", description="Consecutive bad ticks before the symptom opens.")
    clear_ticks: int = Field(1, ge=1, description="Consecutive good ticks before it closes.")
    severity: Literal["info", "warning", "critical"] = "warning"

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _hysteresis(self) -> "SymptomRule":
        if self.direction == "above" and self.exit > self.enter:
            raise ValueError(f"exit ({self.exit}) must not be above enter ({self.enter}) when direction is 'above'")
        if self.direction == "below" and self.exit < self.enter:
            raise ValueError(f"exit ({self.exit}) must not be below enter ({self.enter}) when direction is 'below'")
        return self


def default_symptom_rules() -> list[SymptomRule]:
    """The Analyze rules of a configuration that sets none: drift, performance, and the data-quality findings.

    The quality rules read counts (columns with the finding), so they open at
    the first tick with one (``enter`` 0.5) and close at the first without.
    """
    def quality(symptom: str, metric: str, severity: Literal["warning", "critical"] = "warning") -> SymptomRule:
        return SymptomRule(symptom=symptom, metric=metric, enter=0.5, exit=0.5, for_ticks=1, clear_ticks=1,
                           severity=severity)

    return [
        SymptomRule(symptom="data_drift", metric="drift.share_drifted", enter=0.3, exit=0.1, for_ticks=2, clear_ticks=2),
        SymptomRule(
            symptom="performance_drop", metric="performance.accuracy_drop", enter=0.05, exit=0.02,
            for_ticks=2, clear_ticks=2,
        ),
        quality("schema_change", "quality.schema_changes", "critical"),
        quality("null_spike", "quality.null_spikes"),
        quality("out_of_range", "quality.out_of_range_spikes"),
        quality("unseen_categories", "quality.unseen_category_columns"),
    ]


# --------------------------------------------------------------------------- engine settings


class PrefectSettings(_Strict):
    telemetry: bool = Field(False, description="Let Prefect send anonymous analytics (off: nothing leaves the machine).")
    api_url: str | None = Field(None, description="Prefect API URL; unset runs Prefect in its local, ephemeral mode.")
    home: Path | None = Field(None, description="PREFECT_HOME for the embedded mode (its SQLite database lives here).")
    server_port: int = Field(4200, ge=1, le=65535,
                             description="Port on 127.0.0.1 of the local Prefect server `mape run` starts when "
                                         "no api_url is set (its UI is there too).")
    action_work_pool: str | None = Field(
        None, description="Prefect work pool whose workers run the action flow runs (`prefect worker start --pool "
                          "NAME`; `mape workers deploy` creates it, type process, with the action flow's "
                          "deployment): the tick only creates each due run's flow run there and the worker's flow "
                          "run claims the run. Unset: the tick runs each action in its own process (the embedded "
                          "default).")


class BlastRadius(_Strict):
    """A fleet-wide limit on automatic actions: past it, every new decision waits for a person.

    Within any ``per``, at most ``max_models`` models, or ``max_percent`` % of
    the fleet (rounded down, but at least one model), may be acted on without a
    person; with both set, the smaller limit holds. A decision that would act
    on one more model becomes ``awaiting_approval``.
    """

    max_models: int | None = Field(None, ge=1, description="At most this many models acted on within per.")
    max_percent: float | None = Field(None, gt=0, le=100, description="At most this share of the fleet, in percent.")
    per: timedelta = Field(timedelta(hours=1), description="Length of the sliding window, e.g. 1h.")

    _per = field_validator("per", mode="before")(_duration)

    @model_validator(mode="after")
    def _some_limit(self) -> "BlastRadius":
        if self.max_models is None and self.max_percent is None:
            raise ValueError("set max_models, max_percent or both")
        if self.per <= timedelta(0):
            raise ValueError("per must be longer than 0")
        return self


#: Quality dimensions a policy's alternatives state their expected effect on (issue: Rainbow-style selection).
QUALITY_DIMENSIONS = ("accuracy", "fairness", "latency", "cost", "gco2")
QualityDimension = Literal["accuracy", "fairness", "latency", "cost", "gco2"]


class Utility(_Strict):
    """How much each quality dimension counts when a policy chooses between alternative actions.

    The utility of an alternative is the sum over dimensions of ``weight ×
    expected improvement`` (improvements as the policy states them, positive
    is better); the planner picks the alternative with the highest utility.
    """

    weights: dict[QualityDimension, float] = Field(
        default_factory=lambda: {d: 1.0 for d in QUALITY_DIMENSIONS},
        description="Weight per quality dimension (accuracy, fairness, latency, cost, gco2); missing ones count 0.")

    @field_validator("weights")
    @classmethod
    def _finite(cls, value: dict[str, float]) -> dict[str, float]:
        for key, weight in value.items():
            if weight != weight or weight in (float("inf"), float("-inf")):
                raise ValueError(f"weight of {key} must be a finite number, got {weight}")
        return value


class PlanSettings(_Strict):
    """Fleet-wide settings of the plan stage (policies themselves live in ``policies_dir``)."""

    blast_radius: BlastRadius | None = Field(
        None, description="Fleet-wide limit on models acted on automatically per period; unset: no limit.")
    utility: Utility = Field(default_factory=Utility,
                             description="Weights of the quality dimensions when a policy offers alternatives.")


# --------------------------------------------------------------------------- notifications

#: What a notification is about. ``decision``: a policy decided to act (or would, in dry-run);
#: ``notify``: the ``notify`` action of a policy. The others name what went wrong or waits.
NotificationEvent = Literal["decision", "awaiting_approval", "approval_expired", "escalation", "action_failed",
                            "verification_failed", "notify"]
DEFAULT_NOTIFICATION_EVENTS: tuple[NotificationEvent, ...] = (
    "awaiting_approval", "approval_expired", "escalation", "action_failed", "verification_failed")
#: Channel names: what policies (``spec.notify``) and the ``notify`` action refer to.
CHANNEL_NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,49}$"


def shown_url(url: str) -> str:
    """A channel URL as it may appear in messages: as written if its secrets are ``${VARIABLES}``, else its scheme.

    >>> shown_url("slack://${SLACK_TOKENS}/#ops"), shown_url("slack://T1/B2/secret/#ops")
    ('slack://${SLACK_TOKENS}/#ops', 'slack://… (rest hidden)')
    """
    from mape._util.envvars import references

    if references(url):
        return url
    scheme, sep, _ = url.partition("://")
    return f"{scheme}://… (rest hidden)" if sep else "… (hidden)"


def _apprise_url(url: str) -> str:
    """Check that ``url`` names a variable that is set and a service Apprise supports; keep it unexpanded."""
    from mape._util.envvars import expand

    expanded = expand(url)
    import apprise  # only when channels are configured: importing it costs a tenth of a second

    if apprise.Apprise.instantiate(expanded) is None:
        raise ValueError(f"Apprise does not support this URL or cannot parse it: {shown_url(url)}")
    return url


class ChannelConfig(_Strict):
    """A named notification channel: one or more Apprise URLs, and the events they receive.

    URLs may name environment variables as ``${NAME}``; they are expanded when a
    message is sent, so secrets stay out of the file, the knowledge base and
    ``mape config show``.
    """

    urls: list[Annotated[str, AfterValidator(_apprise_url)]] = Field(
        min_length=1, description="Apprise URLs, e.g. slack://..., msteams://..., mailto://..., json://host/path.")
    events: list[NotificationEvent] = Field(
        default_factory=lambda: list(DEFAULT_NOTIFICATION_EVENTS),
        description="Events this channel receives; policies may add channels for their own decisions (spec.notify).")


class NotificationSettings(_Strict):
    """Where notifications go, and how hard mape tries to deliver them.

    Each tick queues one notification per event and channel in the knowledge
    base (the outbox) and then sends the due ones. A channel that fails is
    tried again on a later tick after ``retry_delay`` (doubling each time, at
    most ``max_retry_delay``) until ``max_attempts``; it never fails the tick.
    """

    channels: dict[Annotated[str, StringConstraints(pattern=CHANNEL_NAME_PATTERN)], ChannelConfig] = Field(
        default_factory=dict, description="Named channels; policies and the notify action refer to them by name.")
    dashboard_url: str | None = Field(
        None, description="Base URL of the dashboard, e.g. http://host:8501; messages link to ?decision=<id>.")
    timeout: float = Field(5.0, gt=0, le=120, description="Seconds to connect and, again, to read a reply, per URL.")
    max_attempts: int = Field(5, ge=1, le=100, description="Attempts per notification and channel before giving up.")
    retry_delay: timedelta = Field(timedelta(minutes=1), description="Wait after the first failed attempt.")
    max_retry_delay: timedelta = Field(timedelta(hours=1), description="Longest wait between attempts.")
    budget: timedelta = Field(
        timedelta(seconds=30),
        description="Time a tick may spend sending; what is left waits for the next tick.")

    _d = field_validator("retry_delay", "max_retry_delay", "budget", mode="before")(_duration)


class MetricsSettings(_Strict):
    """The controller's own ``/metrics`` (``mape run``): ticks, decisions, actions by state, signal freshness."""

    enabled: bool = Field(True, description="Serve /metrics while `mape run` runs.")
    host: str = Field("127.0.0.1", description="Address to listen on; loopback unless Prometheus scrapes from afar.")
    port: int = Field(9464, ge=0, le=65535, description="Port of /metrics (0: any free port).")
    interval: timedelta = Field(timedelta(seconds=15), description="How often the knowledge base is read for them.")

    _d = field_validator("interval", mode="before")(_duration)


class LeaseSettings(_Strict):
    """Several controllers sharing one fleet: each model is acted for by the controller that holds its lease.

    Off (the default), a controller acts for every configured model. On, each
    controller (with its own ``controller_id``, e.g. its pod's name) holds the
    leases of its fair share of the models in the knowledge base, renews them
    every ``renew_every`` and takes those of a controller that stopped
    renewing once they expire (:mod:`knowledge.leases`).
    """

    enabled: bool = Field(False, description="Share the fleet with other controllers through model leases.")
    duration: timedelta = Field(timedelta(seconds=15), description="How long a lease lasts unless renewed, e.g. 15s.")
    renew_every: timedelta = Field(timedelta(seconds=10),
                                   description="How often `mape run` renews its leases and takes free ones, e.g. 10s.")

    _d = field_validator("duration", "renew_every", mode="before")(_duration)

    @model_validator(mode="after")
    def _renewed_in_time(self) -> LeaseSettings:
        if self.renew_every <= timedelta(0):
            raise ValueError(f"leases.renew_every must be longer than 0, got {self.renew_every}")
        if self.duration <= self.renew_every:
            raise ValueError(f"leases.duration ({self.duration}) must be longer than leases.renew_every "
                             f"({self.renew_every}), or a live controller's leases would lapse between renewals")
        return self


class RetentionConfig(_Strict):
    """How the knowledge base stays bounded (:mod:`knowledge.retention`), and Prefect's own database with it.

    Each tick runs a retention pass when one is due (at most once per
    ``every``, shared by every controller of the knowledge base): raw
    observations older than ``raw_for`` become one row per series and
    ``bucket`` (mean, count, min, max), old ticks lose their report; evidence,
    decisions, action runs, versions, policies and the audit trail are kept.
    """

    enabled: bool = Field(True, description="Run the retention pass from the tick (`mape db prune` runs it anyway).")
    raw_for: timedelta = Field(timedelta(days=7), description="Raw observations and tick reports are kept this long "
                                                              "as they are, e.g. 7d.")
    bucket: timedelta = Field(timedelta(hours=1), description="Older observations become one row per series and "
                                                              "bucket of this width (whole seconds), e.g. 1h.")
    every: timedelta = Field(timedelta(hours=1), description="At most one pass per this long, e.g. 1h.")
    budget: timedelta = Field(timedelta(seconds=30), description="Wall-clock time a tick's pass may take; a pass "
                                                                 "that runs out goes on at the next tick.")
    batch_rows: int = Field(50_000, ge=100, le=10_000_000, description="Raw rows per batch (one transaction each).")
    prefect_flow_runs_for: timedelta = Field(
        timedelta(days=7), description="The local Prefect server `mape run` starts deletes finished flow runs "
                                       "(with their logs and artifacts) this old, and events too (Prefect's db_vacuum "
                                       "service); at least 1h.")

    _d = field_validator("raw_for", "bucket", "every", "budget", "prefect_flow_runs_for", mode="before")(_duration)

    @model_validator(mode="after")
    def _sensible(self) -> "RetentionConfig":
        for name in ("raw_for", "bucket", "every", "budget"):
            if getattr(self, name) <= timedelta(0):
                raise ValueError(f"retention.{name} must be longer than 0, got {getattr(self, name)}")
        if self.bucket % timedelta(seconds=1):
            raise ValueError(f"retention.bucket must be a whole number of seconds, got {self.bucket}")
        if self.bucket > self.raw_for:
            raise ValueError(f"retention.bucket ({self.bucket}) must not be longer than retention.raw_for "
                             f"({self.raw_for})")
        if self.prefect_flow_runs_for <= timedelta(hours=1):
            raise ValueError(f"retention.prefect_flow_runs_for must be longer than 1h (Prefect's minimum), got "
                             f"{self.prefect_flow_runs_for}")
        return self


class Settings(BaseSettings):
    """Everything the engine needs, with a default for each field."""

    model_config = SettingsConfigDict(
        env_prefix="MAPE_", env_nested_delimiter="__", extra="forbid", frozen=True, populate_by_name=True
    )

    db_url: str = Field("sqlite:///mape.db", description="Knowledge base: any SQLAlchemy URL; SQLite file by default.")
    sqlite_cache_mib: int = Field(
        DEFAULT_SQLITE_CACHE_MIB, ge=1,
        description="Memory SQLite may keep for the knowledge base in this process, in MiB: each connection's page "
                    "cache and all connections together (a soft heap limit). The operating system caches the file "
                    "too, so a miss costs a copy, not a disk read; the process's memory grows with the knowledge "
                    "base up to this bound. Ignored for PostgreSQL.")
    policies_dir: Path = Field(Path("policies"), description="Directory of policy YAML files loaded by the planner.")
    artifacts_dir: Path = Field(Path("artifacts"), description="Where trained model artifacts are written.")
    artifacts_uri: str | None = Field(
        None, pattern=r"^[a-z][a-z0-9+.-]*://\S+$",
        description="Write artifacts to this fsspec URI instead (s3://bucket/mape, gcs://..., memory://...; the "
                    "protocol's package must be installed); unset: artifacts_dir.")
    serving_dir: Path = Field(Path("serving"),
                              description="State of the local serving target: its replicas' pids, ports and logs.")
    tick_interval: timedelta = Field(timedelta(minutes=5), description="Time between ticks of `mape run`.")
    signal_max_age: timedelta | None = Field(
        None,
        description="Measurements older than this are left out of policy contexts, so a stale signal never fires "
                    "a policy. Default: half the tick interval, i.e. only the current tick's measurements count.",
    )
    controller_id: str = Field("mape-controller", description="Name of this controller in audit events and decisions.")
    models: list[ModelConfig] = Field(default_factory=list, description="The managed models.")
    symptoms: list[SymptomRule] = Field(default_factory=default_symptom_rules, description="Analyze rules.")
    stale_after: timedelta = Field(
        timedelta(minutes=30),
        description="The Analyze stage opens a stale_signal symptom for a model whose drift or performance sensor "
                    "has written nothing for this long (fallback values count as written), and closes it when "
                    "fresh values arrive, e.g. 30m.")
    prefect: PrefectSettings = PrefectSettings()
    plan: PlanSettings = PlanSettings()
    notifications: NotificationSettings = NotificationSettings()
    carbon: CarbonConfig | None = Field(
        None, description="The grid's carbon intensity (carbon.* in policies, and the emissions of actions); "
                          "none: no carbon sensor.")
    access: AccessConfig = Field(AccessConfig(), description="Sign-in and roles (the dashboard, mape decisions).")
    price: PriceConfig | None = Field(
        None, description="Published electricity prices: the forecast of deferred actions whose defer.objective "
                          "weighs price; none: those start at their earliest time.")
    prometheus: PrometheusConfig | None = Field(
        None, description="PromQL queries run against a Prometheus server for every model each tick (serving "
                          "latency, error rate, ...); none: no Prometheus sensor.")
    metrics: MetricsSettings = MetricsSettings()
    leases: LeaseSettings = Field(LeaseSettings(), description="Scale-out: controllers sharing the fleet through "
                                                               "model leases (off: this controller acts for all).")
    retention: RetentionConfig = Field(RetentionConfig(), description="Keeps the knowledge base (and the local "
                                                                      "Prefect server's database) bounded.")
    energy_metering: bool = Field(
        True, description="Measure the energy of every action with codecarbon (offline, process mode) and record "
                          "it, and its emissions at the grid's intensity, on the action run.")
    config_file: Path | None = Field(None, description="The file these settings were read from (set by the loader).")

    _d = field_validator("tick_interval", "stale_after", mode="before")(_duration)
    _m = field_validator("signal_max_age", mode="before")(lambda v: None if v is None else parse_duration(v))

    @field_validator("stale_after")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError(f"stale_after must be longer than 0, got {value}")
        return value

    @property
    def effective_signal_max_age(self) -> timedelta:
        return self.signal_max_age if self.signal_max_age is not None else self.tick_interval / 2

    @model_validator(mode="after")
    def _unique_models(self) -> "Settings":
        seen: set[str] = set()
        for index, model in enumerate(self.models):
            if model.name in seen:
                raise ValueError(f"models[{index}].name: duplicate model name {model.name!r}")
            seen.add(model.name)
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment overrides the file, which arrives as init kwargs.
        return env_settings, init_settings

    def model(self, name: str) -> ModelConfig:
        for model in self.models:
            if model.name == name:
                return model
        raise ConfigError(f"no managed model named {name!r}", source=str(self.config_file or "settings"), field="models")


_PATH_FIELDS = ("policies_dir", "artifacts_dir", "serving_dir")


def _resolve_relative(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Resolve relative file paths of the config against the directory of the config file."""
    data = dict(data)
    for key in _PATH_FIELDS:
        if isinstance(data.get(key), str) and not Path(data[key]).is_absolute():
            data[key] = str(base / data[key])
    url = data.get("db_url")
    if isinstance(url, str) and url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        rest = url[len("sqlite:///"):]
        if rest and rest != ":memory:":
            data["db_url"] = f"sqlite:///{base / rest}"
    for section, key in (("carbon", "path"), ("price", "path"), ("prefect", "home"), ("access", "users_file")):
        value = data.get(section)
        if isinstance(value, dict) and isinstance(value.get(key), str) and not Path(value[key]).is_absolute():
            data[section] = {**value, key: str(base / value[key])}
    models = []
    for model in data.get("models") or []:
        if isinstance(model, dict):
            model = dict(model)
            for source_key in ("inference", "labels_source"):
                source = model.get(source_key)
                if isinstance(source, dict) and source.get("kind") in ("parquet", "csv"):
                    path = source.get("path")
                    if isinstance(path, str) and not Path(path).is_absolute():
                        model[source_key] = {**source, "path": str(base / path)}
            serving = model.get("serving")
            k8s = serving.get("kubernetes") if isinstance(serving, dict) else None
            if isinstance(k8s, dict):
                k8s = dict(k8s)
                for key in ("kubeconfig", "ca_cert"):
                    if isinstance(k8s.get(key), str) and not Path(k8s[key]).expanduser().is_absolute():
                        k8s[key] = str(base / k8s[key])
                model["serving"] = {**serving, "kubernetes": k8s}
        models.append(model)
    if models:
        data["models"] = models
    return data


def _format_location(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts)


def settings_from_mapping(data: dict[str, Any], *, source: str = "settings", base: Path | None = None) -> Settings:
    """Validate a mapping (a parsed YAML file) into :class:`Settings`, with file-and-field errors."""
    if base is not None:
        data = _resolve_relative(data, base)
    try:
        return Settings(**data)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = tuple(p for p in error["loc"] if p not in ("FileSourceConfig", "SqlSourceConfig", "parquet", "csv", "sql"))
        value = error.get("input")
        if isinstance(value, dict) or "urls" in loc:  # channel URLs may hold secrets: the message shows them redacted
            value = None
        raise ConfigError(error["msg"], source=source, field=_format_location(loc) or None, value=value) from None


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Read settings from ``path``, or ``$MAPE_CONFIG``, or ``./mape.yaml`` if it exists, else defaults.

    Raises
    ------
    ConfigError
        Naming the file, the field and the offending value.
    """
    candidate = path or os.environ.get("MAPE_CONFIG")
    if candidate is None and Path(DEFAULT_CONFIG_FILE).exists():
        candidate = DEFAULT_CONFIG_FILE
    if candidate is None:
        return settings_from_mapping({}, source="environment")
    file = Path(candidate).resolve()
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read configuration: {exc.strerror}", source=str(file)) from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", source=str(file)) from None
    if not isinstance(data, dict):
        raise ConfigError("the top level must be a mapping of settings", source=str(file), value=type(data).__name__)
    data.setdefault("config_file", str(file))
    return settings_from_mapping(data, source=str(file), base=file.parent)
