"""Scale-out: controllers that share one fleet through model leases (:mod:`knowledge.leases`)."""

from mape.fleet.keeper import LeaseKeeper

__all__ = ["LeaseKeeper"]
