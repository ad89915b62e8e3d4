"""What every bisman-ops DAG shares: owner, retries with exponential backoff, schedules from the
environment. Kept free of heavy imports: DAG files import it at parse time."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

OWNER = "platform-ops"
START_DATE = datetime(2026, 1, 1, tzinfo=UTC)

DEFAULT_ARGS = {
    "owner": OWNER,
    "retries": 2,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=10),
}

# Steps that change infrastructure retry once: they are idempotent (a re-applied plan is refused as
# stale, a lock re-acquired by the same run is kept), and the operator reads the failure before more.
# Every task is bounded: a step that hangs (a call without an answer) fails after STEP_TIMEOUT; the
# longer ones say so (the apply, the approvals), and a wait's own bound is its timeout.
STEP_TIMEOUT = timedelta(minutes=30)
CHANGE_ARGS = {**DEFAULT_ARGS, "retries": 1, "retry_delay": timedelta(minutes=1),
               "execution_timeout": STEP_TIMEOUT}
# A change run's own bound is a backstop far beyond its tasks' bounds: when it is reached Airflow
# marks every unfinished task skipped, the restores and the lock release included, so it must only
# ever end a run the scheduler stopped moving (tests/dags hold it above the longest path's bounds).
CHANGE_DAGRUN_TIMEOUT = timedelta(days=14)

SCHEDULE_ENV_DEFAULTS = {
    "DAILY_AGGREGATION_CRON": "0 2 * * *",
    "TRIAL_EXPIRY_CRON": "0 * * * *",
    "QUOTA_ALERT_CRON": "30 * * * *",
    "WEEKLY_AUDIT_CRON": "0 0 * * 0",
}


def cron_from_env(name: str, environ: dict | None = None) -> str:
    """The cron expression in environment variable ``name``, else the contract's default.

    A malformed value fails the DAG's import with a message naming the variable, rather than
    silently scheduling something else.
    """
    env = os.environ if environ is None else environ
    value = env.get(name, "").strip() or SCHEDULE_ENV_DEFAULTS[name]
    fields = value.split()
    if len(fields) != 5:
        raise ValueError(f"{name}={value!r} is not a 5-field cron expression")
    from croniter import croniter  # a dependency of Airflow itself

    if not croniter.is_valid(value):
        raise ValueError(f"{name}={value!r} is not a valid cron expression")
    return value
