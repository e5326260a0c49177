"""Where the alibi-detect backend meets alibi-detect: the lazy import, seeded torch randomness, the torch device.

Who calls it: every wrapper of :mod:`mape.monitor.detectors.alibi` imports
``alibi_detect.cd`` through :func:`alibi_cd` at ``fit``, never at module
import, so ``import mape.monitor`` stays free of alibi-detect (an optional,
BSL-licensed extra whose import takes about 11 s cold); the drift sensor and
the configuration call :func:`require_alibi`, which only looks the package up
(:func:`importlib.util.find_spec`).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import TYPE_CHECKING

from mape.errors import InvalidParameterError, MissingDependencyError

if TYPE_CHECKING:
    import torch

#: The message of :class:`~mape.errors.MissingDependencyError` when alibi-detect is absent.
ALIBI_MISSING = "alibi-detect is not installed; pip install 'mape[alibi]'"


def alibi_available() -> bool:
    """Whether alibi-detect can be imported here (looked up, not imported)."""
    return importlib.util.find_spec("alibi_detect") is not None


def require_alibi() -> None:
    """Raise :class:`~mape.errors.MissingDependencyError` unless alibi-detect is installed (without importing it)."""
    if not alibi_available():
        raise MissingDependencyError(ALIBI_MISSING)


def alibi_cd() -> ModuleType:
    """``alibi_detect.cd``, imported on first use.

    Raises
    ------
    MissingDependencyError
        alibi-detect is not installed.
    """
    try:
        return importlib.import_module("alibi_detect.cd")
    except ModuleNotFoundError as exc:
        if exc.name is not None and exc.name.split(".")[0] == "alibi_detect":
            raise MissingDependencyError(ALIBI_MISSING) from None
        raise


@contextmanager
def seeded(random_state: int) -> Iterator[None]:
    """Run the block with torch's CPU generator seeded with ``random_state``, restoring its state afterwards.

    alibi-detect draws its permutations, bootstraps and kernel centres from
    torch's global generator; seeding it around each call makes a verdict a
    function of the data (as ``random_state`` does for the built-in MMD)
    without disturbing anyone else's use of that generator.
    """
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(random_state)
        yield


def torch_device(device: str, owner: str) -> torch.device:
    """The torch device for ``"cpu"``, ``"cuda"`` or ``"auto"`` (CUDA when available)."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise InvalidParameterError.for_parameter(
            "device", owner, "'cpu' or 'auto' where torch finds no CUDA device", device)
    return torch.device(device)
