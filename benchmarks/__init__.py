"""Speed and quality benchmarks of mape; ``make bench`` runs them all (``python -m benchmarks``)."""
