"""mape: a self-adaptive MAPE-K control loop for machine-learning operations.

The engine is split by stage: :mod:`mape.monitor` turns data into observations,
:mod:`mape.analyze` turns observations into symptoms, :mod:`mape.plan` turns
symptoms and signals into decisions through YAML policies, and
:mod:`mape.execute` carries decisions out as Prefect flows. Every stage reads
and writes the knowledge base in :mod:`knowledge`; :mod:`mape.controller` runs
one tick of the loop and :mod:`flows` wraps it for Prefect.
"""

__version__ = "0.1.0"
