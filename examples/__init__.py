"""Managed systems for mape's demo and tests: each subpackage is a model, its data and its training entrypoint."""
