"""Resolve ``package.module:function`` import paths named in configuration."""

from __future__ import annotations

import importlib
from typing import Any


def import_object(path: str) -> Any:
    """Import the object named by ``module:attribute`` (attribute may be dotted).

    >>> import_object("os.path:join")("a", "b")
    'a/b'
    >>> import_object("os.path")
    Traceback (most recent call last):
    ...
    ValueError: 'os.path' is not an import path of the form 'package.module:function'
    """
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"{path!r} is not an import path of the form 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import module {module_name!r} named in {path!r}: {exc}") from exc
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ValueError(f"module {module_name!r} has no attribute {attribute!r} (from {path!r})") from None
    return target
