"""A credit-default classifier on a synthetic tabular stream: the managed system of ``mape demo``.

* :mod:`examples.credit.stream` generates requests and delayed labels, with a
  known drift onset (covariate and concept shift) and an optional labelling
  incident; it is seeded, so every run is the same.
* :mod:`examples.credit.model` is the training entrypoint
  (``examples.credit.model:train``): a scikit-learn pipeline.
* :mod:`examples.credit.serving` scores requests with whatever version the
  knowledge base says is in production, and writes the inference log and the
  labels as Parquet files, as a real serving stack would.
* :mod:`examples.credit.demo` runs the whole scenario through the controller.
"""
