"""The application's health endpoints (CONTRACT.md), checked after a rollback until they settle."""

from __future__ import annotations

import time

from bisman_ops.app_api import HEALTH_PATHS, probe_health
from bisman_ops.rollback import RollbackFailed


def check_health(
    base_url: str, *, paths: tuple[str, ...] = HEALTH_PATHS, within_s: float = 60, interval_s: float = 3
) -> list[list]:
    """Every path answers 200, retried for up to ``within_s`` (a switch takes a moment to settle).
    Returns rows [path, status, ms]; raises RollbackFailed naming the failing paths."""
    deadline = time.monotonic() + within_s
    while True:
        rows = [[r["path"], r["status"], r["ms"]] for r in probe_health(base_url, paths)]
        failing = [f"{p} -> {s}" for p, s, _ in rows if s != 200]
        if not failing:
            return rows
        if time.monotonic() >= deadline:
            raise RollbackFailed(
                f"application at {base_url} unhealthy after {within_s:.0f} s: "
                f"{', '.join(failing)}; check the application's logs and its database "
                "and Redis connections"
            )
        time.sleep(interval_s)
