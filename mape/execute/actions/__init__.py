"""The built-in effectors; importing this package registers them on the default registry."""

from mape.execute.actions import notify, rescale, retrain, rollback  # noqa: F401
