"""The three manual rollbacks (application, database, infrastructure): their checks, steps and
verification, as plain functions the DAGs' tasks call (the tasks run in ``bisman_ops.change``).

Every check of a request runs first, before the change lock is taken or anyone is told, and raises
``CheckFailed`` naming the problem; a target outside the locked environment is one of them.
"""

from __future__ import annotations

import re
from typing import Any

from bisman_ops import config
from bisman_ops.change.errors import CheckFailed
from bisman_ops.naming import ResourceNames

NOTHING_CHANGED = "Nothing was changed; correct the request and trigger again"
# RDS DB instance identifiers: 1-63 letters, digits and hyphens, a letter first, no two hyphens in a
# row, no hyphen at the end. The form uses the same pattern (empty allowed where it is derived).
RDS_IDENTIFIER_PATTERN = r"^(?!.*--)[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$"
_RDS_IDENTIFIER = re.compile(RDS_IDENTIFIER_PATTERN)


class RollbackRefused(ValueError):
    """The request is not acceptable; nothing was changed (the infrastructure rollback's, until it
    moves to CheckFailed)."""


class RollbackFailed(RuntimeError):
    """A step failed after the checks passed (the infrastructure rollback's, until it moves)."""


def resource_names(environment: str, environ: dict | None = None) -> ResourceNames:
    """The environment's resource names; the project is the deployment's (``config.project_name``)."""
    try:
        return ResourceNames(config.project_name(environ=environ), environment)
    except ValueError as exc:
        raise CheckFailed("environment", environment, "staging or prod", NOTHING_CHANGED) from exc


def check_confirm(given: str | None, expected: str, what: str) -> None:
    """The operator typed ``expected`` (exactly) in the form's confirm field."""
    if given != expected:
        raise CheckFailed(
            "confirm", repr(given or ""), f"{what} {expected!r}, typed exactly", NOTHING_CHANGED
        )


def check_rds_identifier(value: str, field: str) -> str:
    """``value`` is an identifier RDS accepts (see RDS_IDENTIFIER_PATTERN)."""
    if not _RDS_IDENTIFIER.match(value or ""):
        raise CheckFailed(
            field,
            repr(value),
            "1-63 letters, digits or hyphens, starting with a letter, without two hyphens in a row "
            "or a hyphen at the end (RDS's rules)",
            NOTHING_CHANGED,
        )
    return value


def tags_of(tag_list: list[dict[str, Any]] | None) -> dict[str, str]:
    """RDS (Key/Value) and ECS (key/value) tag lists as a dict."""
    out = {}
    for t in tag_list or []:
        key, value = t.get("Key", t.get("key")), t.get("Value", t.get("value"))
        if key is not None:
            out[str(key)] = str(value)
    return out


def check_in_environment(
    kind: str, name: str, expected_name: str, tags: dict[str, str], names: ResourceNames
) -> str:
    """A target belongs to the locked environment: it is the environment's own (by name) or is
    tagged ``Environment=<env>`` (and ``Project=<project>`` when tagged with a project)."""
    tagged = (
        tags.get("Environment") == names.environment
        and tags.get("Project", names.project_name) == names.project_name
    )
    if name == expected_name or tagged:
        return "by name" if name == expected_name else "by its Environment tag"
    raise CheckFailed(
        f"{kind} {name} belongs to {names.environment}",
        f"named {name}, tags {tags or 'none'}",
        f"{expected_name}, or a {kind} tagged Environment={names.environment}",
        f"{NOTHING_CHANGED} (a rollback acts only inside the environment whose lock it takes)",
    )


def mask(value: str | None) -> None:
    """Hide a secret fetched at run time from every later log line of this task."""
    if not value:
        return
    try:
        from airflow.sdk.log import mask_secret

        mask_secret(value)
    except Exception:  # outside a task (unit tests) there is no masker to register with
        pass
