"""What the four recurring DAG files share: bounds on every task and run, the team told of a
failure, and a watcher leaf so a failed task fails the run.

Kept free of heavy imports: the DAG files import it at parse time.
"""

from __future__ import annotations

from datetime import timedelta

from bisman_ops.dag_defaults import DEFAULT_ARGS
from bisman_ops.notifiers import TeamNotifier


class RunFailed(RuntimeError):
    """Raised by the watcher: an upstream task failed, so the run must not end success."""


class RunTimeoutNotifier(TeamNotifier):
    """The team hears of a run stopped by its ``dagrun_timeout`` (a task's own failure is told by
    its task callback, with its error; a run timeout has no failed task to tell it)."""

    def notify(self, context) -> None:
        if context.get("reason") == "timed_out":
            super().notify(context)


def task_args(execution_timeout: timedelta) -> dict:
    """``default_args`` of a recurring DAG: retries, a bound per attempt, the team told on failure."""
    return {**DEFAULT_ARGS, "execution_timeout": execution_timeout, "on_failure_callback": TeamNotifier()}


def run_args(dagrun_timeout: timedelta) -> dict:
    """DAG-level arguments: a bound for the whole run and a notice when it is hit."""
    return {
        "dagrun_timeout": dagrun_timeout,
        "on_failure_callback": RunTimeoutNotifier(
            what="{{ dag.dag_id }} (run {{ run_id }}) stopped by its dagrun_timeout",
            next_step="find the task that hung in the run's log; the job is idempotent, trigger it again"),
    }


# One attempt of a task; the database's statement_timeout (recurring.db) is shorter still.
HOURLY_TASK_TIMEOUT = timedelta(minutes=15)
HOURLY_RUN_TIMEOUT = timedelta(minutes=55)  # the next hourly run is due: never two at once
DAILY_TASK_TIMEOUT = timedelta(minutes=45)
DAILY_RUN_TIMEOUT = timedelta(hours=3)
WEEKLY_TASK_TIMEOUT = timedelta(minutes=30)
WEEKLY_RUN_TIMEOUT = timedelta(hours=2)


def fail_run() -> None:
    raise RunFailed("an upstream task of this run failed (see its log and the team notice); "
                    "this watcher fails the run so that it does not end success")


def watcher():
    """A leaf downstream of every task (``list(dag.tasks) >> watcher()``): it runs only when one of
    them failed and then fails, so the run's state is failed even when an ``all_done`` task after
    the failure succeeded. No callback: the failed task already told the team. (One quick retry
    only because every task of the project retries; it fails again.)"""
    from airflow.sdk import task

    return task(fail_run, task_id="watcher", trigger_rule="one_failed", retries=1,
                retry_delay=timedelta(seconds=1), retry_exponential_backoff=0,
                on_failure_callback=None, execution_timeout=timedelta(minutes=1))()
