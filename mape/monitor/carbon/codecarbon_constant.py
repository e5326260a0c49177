"""A constant carbon intensity: codecarbon's annual figure for a country, the fallback provider.

Who calls it: :func:`mape.monitor.carbon.provider_from_config` for
``carbon.provider: codecarbon``, the default when nothing else is
configured. It needs no network and no file, and it knows nothing of the
hour: ``current`` is the annual average, the forecast is flat (so
``carbon.forecast_min`` equals ``carbon.intensity`` and a policy that waits
for a cleaner hour never fires on it).
"""

from __future__ import annotations

import logging
from datetime import datetime

from mape._util.timeutil import ensure_utc
from mape.data.energy import country_intensity
from mape.monitor.carbon.provider import IntensityPoint

__all__ = ["CountryConstantProvider"]

log = logging.getLogger(__name__)


class CountryConstantProvider:
    """codecarbon's offline annual intensity of a country, as a constant.

    Parameters
    ----------
    country_iso_code : str, optional
        Three-letter ISO code, e.g. ``"DEU"``. ``None`` or a code codecarbon
        does not know gives the world average (475 gCO2/kWh in codecarbon
        3.3), which is logged once and named in ``source``.

    Examples
    --------
    >>> from datetime import timezone
    >>> provider = CountryConstantProvider("FRA")
    >>> at = datetime(2026, 3, 10, 12, tzinfo=timezone.utc)
    >>> point = provider.current(at)
    >>> point.source, point.g_per_kwh == provider.g_per_kwh
    ('codecarbon:FRA', True)
    >>> [p.g_per_kwh for p in provider.forecast(at, at.replace(hour=18))] == [provider.g_per_kwh]
    True
    >>> CountryConstantProvider().source
    'codecarbon:world-average'
    """

    def __init__(self, country_iso_code: str | None = None) -> None:
        self.country_iso_code = country_iso_code
        figure = country_intensity(country_iso_code)
        self.g_per_kwh = figure.g_per_kwh
        self.country_name = figure.country_name
        if figure.country_iso_code is None:
            self.source = "codecarbon:world-average"
            if country_iso_code:
                log.warning("codecarbon has no carbon intensity for country %r; using the world average, %g gCO2/kWh",
                            country_iso_code, self.g_per_kwh)
        else:
            self.source = f"codecarbon:{figure.country_iso_code}"

    def __repr__(self) -> str:
        return f"CountryConstantProvider({self.country_iso_code!r})"

    def current(self, at: datetime) -> IntensityPoint:
        """The annual figure, stamped ``at``."""
        return IntensityPoint(ensure_utc(at), self.g_per_kwh, self.source)

    def forecast(self, start: datetime, end: datetime) -> list[IntensityPoint]:
        """One step at ``start`` holding the annual figure over the whole window (``[]`` for an empty window)."""
        start, end = ensure_utc(start), ensure_utc(end)
        return [IntensityPoint(start, self.g_per_kwh, self.source)] if end > start else []
