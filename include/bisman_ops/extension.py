"""Plug-in points: where a deployment (the local sandbox) swaps in its own implementation of a
small product interface without the product knowing it.

``load(name, default)`` returns the object that the environment variable ``BISMAN_IMPL_<NAME>``
names as ``package.module:attribute``, or ``default`` when it is unset. The product defines the
interface (a ``Protocol``) and its AWS implementation; it never imports the implementation it is
given.
"""

from __future__ import annotations

import importlib
import os
import re
from typing import Any

ENV_PREFIX = "BISMAN_IMPL_"
_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def env_var(name: str) -> str:
    return ENV_PREFIX + re.sub(r"\W", "_", name).upper()


def load(name: str, default: Any, environ: dict | None = None) -> Any:
    """The implementation configured for ``name``, else ``default``."""
    env = os.environ if environ is None else environ
    var = env_var(name)
    spec = env.get(var, "").strip()
    if not spec:
        return default
    if not _SPEC.match(spec):
        raise ValueError(f"{var}={spec!r} is not 'package.module:attribute'")
    module_name, _, attr = spec.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"{var}={spec!r}: module {module_name!r} cannot be imported ({exc})") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"{var}={spec!r}: {module_name} has no attribute {attr!r}") from None
    return obj
