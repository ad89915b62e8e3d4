"""The application's health endpoints (CONTRACT.md), checked after a rollback until they settle.
(The database and application rollbacks wait with the ``steps.application_healthy`` sensor; this
bounded check serves the infrastructure rollback until it does too.)"""

from __future__ import annotations

import time

from bisman_ops import config
from bisman_ops.change.errors import CheckFailed
from bisman_ops.clients import app_http


def check_health(
    conn_id: str = config.APP_API_CONN_ID, *, within_s: float = 60, interval_s: float = 3
) -> list[list]:
    """Every health endpoint answers 200, asked again for up to ``within_s``. Rows [path, status, ms]."""
    deadline = time.monotonic() + within_s
    while True:
        results = app_http.probe_health(conn_id)
        failing = app_http.unhealthy(results)
        if not failing:
            return [[r["path"], r["status"], r["ms"]] for r in results]
        if time.monotonic() >= deadline:
            raise CheckFailed(
                "application health",
                ", ".join(failing),
                "200 from every health endpoint",
                "check the application's logs and its database and Redis connections",
            )
        time.sleep(interval_s)
