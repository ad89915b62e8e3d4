"""Fail points: kill a changing step's own process right after its change, to drill the restores.

A restore must run whenever its damage may have happened, including when the worker running the
damaging step dies after the damage and before the step could report (``bisman_ops.change.phase``).
That is only shown by killing a real worker at that point. ``BISMAN_FAILPOINTS_FILE`` names a JSON
file of ``{"dag_id", "run_id", "task_id", "try_number"}`` entries; a step with ``changes=True`` that
matches one, once its function has returned, sends SIGKILL to its own process (no ``finally``, no
callback, no XCom: as an out-of-memory kill would). An entry with ``"at"`` names a point inside a
step instead (``reached``: PgBouncer's pool paused, before the switch RESUMEs it). Unset
(production), nothing is read.
"""

from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FILE_ENV = "BISMAN_FAILPOINTS_FILE"


def armed(ti: Any, environ: dict | None = None, at: str | None = None) -> bool:
    """Whether a fail point of the file matches this task instance's try (and point ``at``)."""
    path = (os.environ if environ is None else environ).get(FILE_ENV)
    if not path:
        return False
    try:
        entries = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return False
    me = {"dag_id": ti.dag_id, "run_id": ti.run_id, "task_id": ti.task_id, "try_number": ti.try_number}
    return any(all(entry.get(k) == v for k, v in me.items()) and entry.get("at") == at for entry in entries)


def after_change(ti: Any) -> None:
    """SIGKILL this process when a fail point names this try (see the module docstring)."""
    if armed(ti):
        _kill(ti, "after its change")


def reached(at: str) -> None:
    """SIGKILL this process when a fail point names this try and ``at`` (see the module docstring)."""
    if not os.environ.get(FILE_ENV):
        return
    from airflow.sdk import get_current_context

    try:
        ti = get_current_context()["ti"]
    except Exception:  # not inside a task: nothing to match
        return
    if armed(ti, at=at):
        _kill(ti, at)


def _kill(ti: Any, where: str) -> None:
    log.warning("fail point: killing %s try %s %s", ti.task_id, ti.try_number, where)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os.kill(os.getpid(), signal.SIGKILL)
