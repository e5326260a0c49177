"""Grid carbon intensity: providers of the intensity now and ahead, and the sensor that reads them.

Who calls it: the Monitor stage builds one provider from the settings
(:func:`provider_from_config`) and reads it once per tick through
:class:`~mape.monitor.carbon.sensor.CarbonSensor`; its report becomes the
``carbon.*`` observations policies read (``carbon.intensity``,
``carbon.forecast_min``, ``carbon.forecast_min_in_seconds``,
``carbon.forecast_mean``).

One job per module: :mod:`.provider` (the protocol and the step-function
point), :mod:`.series` (a CSV or Parquet trace), :mod:`.synthetic` (the
generator of the shipped trace), :mod:`.codecarbon_constant` (codecarbon's
annual per-country figure, the fallback), :mod:`.http` (Electricity Maps and
the GB Carbon Intensity API) and :mod:`.sensor`. The energy of actions is
measured in :mod:`mape.data.energy`, below the stages, because the Execute
stage may not import this one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from mape.config import CarbonConfig
from mape.errors import ConfigError, DataSourceError
from mape.monitor.carbon.codecarbon_constant import CountryConstantProvider
from mape.monitor.carbon.http import ElectricityMapsProvider, UKCarbonIntensityProvider
from mape.monitor.carbon.provider import IntensityPoint, IntensityProvider
from mape.monitor.carbon.sensor import CarbonReport, CarbonSensor, carbon_observations
from mape.monitor.carbon.series import SeriesProvider

__all__ = ["CarbonReport", "CarbonSensor", "CountryConstantProvider", "ElectricityMapsProvider", "IntensityPoint",
           "IntensityProvider", "SeriesProvider", "UKCarbonIntensityProvider", "carbon_observations",
           "provider_from_config", "sensor_from_config"]


def provider_from_config(cfg: CarbonConfig | None, *, environ: Mapping[str, str] | None = None,
                         source: str = "settings") -> IntensityProvider:
    """The provider the carbon settings name; codecarbon's world average when there are none.

    Parameters
    ----------
    cfg : CarbonConfig or None
        The ``carbon`` settings. A relative ``path`` is taken as given
        (the settings loader resolves it against the configuration file).
    environ : mapping, optional
        Where ``token_env`` is looked up (default: ``os.environ``).
    source : str
        The configuration file, for error messages.

    Raises
    ------
    ConfigError
        When the Electricity Maps token variable is not set, or the series
        file cannot be read (naming the file and the row).

    >>> provider_from_config(None)
    CountryConstantProvider(None)
    >>> provider_from_config(CarbonConfig(provider="uk", region=13))
    UKCarbonIntensityProvider(region=13, base_url='https://api.carbonintensity.org.uk')
    """
    if cfg is None:
        return CountryConstantProvider(None)
    api: dict[str, object] = {"timeout": cfg.timeout, "cache_ttl": cfg.cache_ttl}
    if cfg.base_url:
        api["base_url"] = cfg.base_url.rstrip("/")
    if cfg.provider == "series":
        assert cfg.path is not None  # the settings' validator requires it
        try:
            return SeriesProvider(cfg.path, repeat=cfg.repeat)
        except DataSourceError as exc:
            raise ConfigError(str(exc), source=source, field="carbon.path") from None
    if cfg.provider == "electricitymaps":
        env = os.environ if environ is None else environ
        token = env.get(cfg.token_env, "")
        if not token:
            raise ConfigError(f"environment variable {cfg.token_env} (the Electricity Maps token) is not set",
                              source=source, field="carbon.token_env")
        assert cfg.zone is not None  # the settings' validator requires it
        return ElectricityMapsProvider(token, cfg.zone, **api)  # type: ignore[arg-type]
    if cfg.provider == "uk":
        return UKCarbonIntensityProvider(cfg.region, **api)  # type: ignore[arg-type]
    return CountryConstantProvider(cfg.country_iso_code)


def sensor_from_config(cfg: CarbonConfig | None, **kwargs: object) -> CarbonSensor:
    """A :class:`CarbonSensor` over :func:`provider_from_config`, with the configured horizon."""
    provider = provider_from_config(cfg, **kwargs)  # type: ignore[arg-type]
    return CarbonSensor(provider) if cfg is None else CarbonSensor(provider, horizon=cfg.horizon)
