"""Timings of the sandbox's failure paths and lag measurement: figures to read, not pass/fail
checks (tests/sandbox asserts the behaviour, this measures how fast).

    PYTHONPATH=include python bench/sandbox.py        # against the sandbox of BISMAN_SANDBOX_DIR

Prints one JSON object: how long the read-only pool takes to fail with the replica down (bound:
PgBouncer's query_wait_timeout), how long the stand-in application takes to answer 503 with
PgBouncer down, and the replica lag measured right after a write (min / median / max of 20).
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import psycopg
import requests

from bisman_sandbox import launcher, pgbouncer, postgres
from bisman_sandbox.context import SandboxContext


def ro_pool_failure_seconds(ctx: SandboxContext) -> float:
    postgres.stop_replica(ctx)
    try:
        started = time.monotonic()
        try:
            with psycopg.connect(pgbouncer.dsn(ctx, "ro"), autocommit=True, prepare_threshold=None) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error:
            pass
        return time.monotonic() - started
    finally:
        postgres.start_replica(ctx)


def health_503_seconds(ctx: SandboxContext) -> float:
    base = ctx.url("app")
    pgbouncer.down(ctx)
    try:
        started = time.monotonic()
        requests.get(f"{base}/health", timeout=30)
        requests.get(f"{base}/api/health/db", timeout=30)
        return time.monotonic() - started
    finally:
        pgbouncer.up(ctx)


def replica_lags(ctx: SandboxContext, n: int = 20) -> list[float]:
    return [postgres.replica_lag_seconds(ctx) for _ in range(n)]


def main() -> int:
    ctx = SandboxContext.from_env()
    launcher.up(ctx, out=sys.stderr)
    lags = replica_lags(ctx)
    figures = {
        "ro_pool_failure_s": round(ro_pool_failure_seconds(ctx), 2),
        "ro_pool_failure_bound_s": pgbouncer.QUERY_WAIT_TIMEOUT,
        "health_503_with_pgbouncer_down_s": round(health_503_seconds(ctx), 2),
        "replica_lag_s": {"min": round(min(lags), 4), "median": round(statistics.median(lags), 4),
                          "max": round(max(lags), 4)},
    }
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
