"""The three manual rollbacks (application, database, infrastructure): their checks, steps and
verification, as plain functions the DAGs call. Every check of a request runs before any change and
raises ``RollbackRefused`` naming the problem; a step that fails after changes began raises
``RollbackFailed`` saying what was done and what to do next.
"""

from __future__ import annotations

import os

from bisman_ops.naming import ResourceNames

PROJECT_NAME_ENV = "BISMAN_PROJECT_NAME"
DEFAULT_PROJECT_NAME = "bisman-erp"


class RollbackRefused(ValueError):
    """The request is not acceptable; nothing was changed."""


class RollbackFailed(RuntimeError):
    """A rollback step failed after the checks passed."""


def resource_names(environment: str, environ: dict | None = None) -> ResourceNames:
    env = os.environ if environ is None else environ
    project = env.get(PROJECT_NAME_ENV, "").strip() or DEFAULT_PROJECT_NAME
    try:
        return ResourceNames(project, environment)
    except ValueError as exc:
        raise RollbackRefused(f"{exc}; nothing was changed") from None


def check_confirm(given: str | None, expected: str, what: str) -> None:
    """The operator typed ``expected`` (exactly) in the form's confirm field."""
    if not given:
        raise RollbackRefused(
            f"confirm is empty; type {what} {expected!r} in confirm to go ahead. Nothing was changed."
        )
    if given != expected:
        raise RollbackRefused(
            f"confirm {given!r} does not match {what} {expected!r}; type it exactly. Nothing was changed."
        )


def env_flag(name: str, default: bool, environ: dict | None = None) -> bool:
    env = os.environ if environ is None else environ
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name}={raw!r} is not a boolean (true/false)")
