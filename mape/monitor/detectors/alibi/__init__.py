"""The alibi-detect drift backend: alibi-detect's detectors behind mape's detector interfaces.

Who calls it: the drift sensor when a model's drift settings say
``backend: alibi`` (:class:`AlibiKSDetector` or :class:`AlibiCVMDetector` for
numeric features, :class:`AlibiChiSquareDetector` for categorical ones), and
callers who want alibi-detect's table-wide and streaming detectors
(:class:`AlibiTabularDetector`, :class:`AlibiMMDDetector`,
:class:`AlibiLSDDDetector`, :class:`AlibiMMDOnline`, :class:`AlibiLSDDOnline`).

alibi-detect is an optional extra (``pip install 'mape[alibi]'``): it is
licensed under the Business Source License 1.1 (production use needs a
commercial licence from Seldon), pins ``numpy<2`` and takes about 11 s to
import. Importing this package does not import it: each wrapper imports
``alibi_detect.cd`` at ``fit`` (:func:`~mape.monitor.detectors.alibi._backend.alibi_cd`)
and raises :class:`~mape.errors.MissingDependencyError` with the install hint
when it is absent. Every result is a mape
:class:`~mape.monitor.detectors.DetectorResult` with mape's effect size, so
the two backends' reports compare; the multivariate and online detectors run
on alibi-detect's PyTorch backend (its default, TensorFlow, is not installed).
"""

from __future__ import annotations

from mape.monitor.detectors.alibi._backend import ALIBI_MISSING, alibi_available, require_alibi
from mape.monitor.detectors.alibi._kernel import AlibiKernelResult
from mape.monitor.detectors.alibi.chi2 import AlibiChiSquareDetector
from mape.monitor.detectors.alibi.cvm import AlibiCVMDetector
from mape.monitor.detectors.alibi.ks import AlibiKSDetector
from mape.monitor.detectors.alibi.lsdd import AlibiLSDDDetector
from mape.monitor.detectors.alibi.mmd import AlibiMMDDetector
from mape.monitor.detectors.alibi.online_lsdd import AlibiLSDDOnline
from mape.monitor.detectors.alibi.online_mmd import AlibiMMDOnline
from mape.monitor.detectors.alibi.tabular import AlibiTabularDetector

#: The one-column detectors of this backend; ``tests/monitor/alibi/test_contract.py`` checks each one.
ALIBI_DETECTORS = (AlibiKSDetector, AlibiCVMDetector, AlibiChiSquareDetector)
#: The multivariate two-sample detectors of this backend.
ALIBI_MULTIVARIATE_DETECTORS = (AlibiMMDDetector, AlibiLSDDDetector)
#: The streaming detectors of this backend.
ALIBI_ONLINE_DETECTORS = (AlibiMMDOnline, AlibiLSDDOnline)

__all__ = ["ALIBI_DETECTORS", "ALIBI_MISSING", "ALIBI_MULTIVARIATE_DETECTORS", "ALIBI_ONLINE_DETECTORS",
           "AlibiCVMDetector", "AlibiChiSquareDetector", "AlibiKSDetector", "AlibiKernelResult",
           "AlibiLSDDDetector", "AlibiLSDDOnline", "AlibiMMDDetector", "AlibiMMDOnline", "AlibiTabularDetector",
           "alibi_available", "require_alibi"]
