"""Collection rules for the whole repository (the suite's fixtures are in tests/conftest.py).

The alibi-detect backend's doctests need the optional extra: without it they
are not collected (``make test-alibi`` runs them in ``.venv-alibi``).
"""

import importlib.util

collect_ignore_glob = [] if importlib.util.find_spec("alibi_detect") else ["mape/monitor/detectors/alibi/*.py"]
