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
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from mape._util.timeutil import parse_duration
from mape.errors import ConfigError

DEFAULT_CONFIG_FILE = "mape.yaml"


def _duration(value: Any) -> timedelta:
    return parse_duration(value)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- data sources


class FileSourceConfig(_Strict):
    """Rows in Parquet or CSV files: one file, a directory of files, or a glob."""

    kind: Literal["parquet", "csv"]
    path: str = Field(description="File, directory or glob; relative paths are resolved against the config file.")
    timestamp_column: str = Field("timestamp", description="Column holding the event time of each row.")
    id_column: str = Field("id", description="Column holding the row's unique id (joins predictions to labels).")


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

    _d = field_validator("window", mode="before")(_duration)


class PerformanceConfig(_Strict):
    window: timedelta = Field(timedelta(hours=2), description="Predictions made in this window and labelled so far are scored.")
    min_samples: int = Field(100, ge=1, description="Fewer labelled predictions than this: the metric is not reported.")

    _d = field_validator("window", mode="before")(_duration)


class PromotionConfig(_Strict):
    evaluation_window: timedelta = Field(
        timedelta(hours=1),
        description="Champion/challenger window: the most recent labelled data, held out from training.",
    )
    margin: float = Field(0.0, ge=0, le=1, description="The candidate may be at most this much worse than production.")
    min_samples: int = Field(100, ge=1, description="Fewer labelled rows in the evaluation window: no promotion.")

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

    @field_validator("scale_down_stabilization")
    @classmethod
    def _not_negative(cls, value: timedelta) -> timedelta:
        if value < timedelta(0):
            raise ValueError(f"scale_down_stabilization must not be negative, got {value}")
        return value

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


class ServingConfig(_Strict):
    """Where a model serves predictions, and how its replicas may be scaled."""

    target: Literal["local"] = Field("local", description="The serving target: local (model-server processes on "
                                                           "loopback ports).")
    replicas: ScaleBounds = Field(default_factory=ScaleBounds)
    local: LocalServingConfig = Field(default_factory=LocalServingConfig)


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
    version_column: str | None = Field(
        "model_version", description="Column naming the version that served each row; null if the log has none."
    )
    labels_source: SourceConfig = Field(description="Ground truth, joined to predictions by id whenever it arrives.")
    label_column: str = "label"
    training: TrainingConfig
    drift: DriftConfig = DriftConfig()
    performance: PerformanceConfig = PerformanceConfig()
    promotion: PromotionConfig = PromotionConfig()
    serving: ServingConfig | None = Field(
        None, description="How the model is served; needed by the rescale action (none: it cannot be rescaled).")


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
    return [
        SymptomRule(symptom="data_drift", metric="drift.share_drifted", enter=0.3, exit=0.1, for_ticks=2, clear_ticks=2),
        SymptomRule(
            symptom="performance_drop", metric="performance.accuracy_drop", enter=0.05, exit=0.02,
            for_ticks=2, clear_ticks=2,
        ),
    ]


# --------------------------------------------------------------------------- engine settings


class PrefectSettings(_Strict):
    telemetry: bool = Field(False, description="Let Prefect send anonymous analytics (off: nothing leaves the machine).")
    api_url: str | None = Field(None, description="Prefect API URL; unset runs Prefect in its local, ephemeral mode.")
    home: Path | None = Field(None, description="PREFECT_HOME for the embedded mode (its SQLite database lives here).")
    server_port: int = Field(4200, ge=1, le=65535,
                             description="Port on 127.0.0.1 of the local Prefect server `mape run` starts when "
                                         "no api_url is set (its UI is there too).")


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


class Settings(BaseSettings):
    """Everything the engine needs, with a default for each field."""

    model_config = SettingsConfigDict(
        env_prefix="MAPE_", env_nested_delimiter="__", extra="forbid", frozen=True, populate_by_name=True
    )

    db_url: str = Field("sqlite:///mape.db", description="Knowledge base: any SQLAlchemy URL; SQLite file by default.")
    policies_dir: Path = Field(Path("policies"), description="Directory of policy YAML files loaded by the planner.")
    artifacts_dir: Path = Field(Path("artifacts"), description="Where trained model artifacts are written.")
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
    prefect: PrefectSettings = PrefectSettings()
    plan: PlanSettings = PlanSettings()
    notifications: NotificationSettings = NotificationSettings()
    config_file: Path | None = Field(None, description="The file these settings were read from (set by the loader).")

    _d = field_validator("tick_interval", mode="before")(_duration)
    _m = field_validator("signal_max_age", mode="before")(lambda v: None if v is None else parse_duration(v))

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
    prefect = data.get("prefect")
    if isinstance(prefect, dict) and isinstance(prefect.get("home"), str) and not Path(prefect["home"]).is_absolute():
        data["prefect"] = {**prefect, "home": str(base / prefect["home"])}
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
