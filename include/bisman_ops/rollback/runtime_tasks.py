"""Tasks every rollback DAG opens and ends with, built here once. It opens by taking the change lock
and telling the team what starts; it ends by releasing the lock, then writing the report and telling
the team. The closing pair are teardowns of ``acquire_change_lock``, so they run however the work
ended (failed, refused, rejected at approval) and never decide the run's state."""

from __future__ import annotations

from collections.abc import Callable

from airflow.sdk import task


def opening(title: str, describe: Callable[[dict], str]):
    """``acquire_change_lock >> notify_team_of_start``; ``describe`` words the request from the form."""

    @task(task_id="acquire_change_lock")
    def acquire_change_lock() -> dict:
        from bisman_ops.rollback import runtime

        return runtime.acquire_lock(title)

    @task(task_id="notify_team_of_start")
    def notify_team_of_start() -> None:
        from bisman_ops.rollback import runtime

        runtime.notify_start(title, describe(runtime.context()["params"]))

    lock = acquire_change_lock()
    started = notify_team_of_start()
    lock >> started
    return lock, started


def teardowns(lock, title: str, step_ids: list[str], success_summary: str):
    @task(task_id="release_change_lock")
    def release_change_lock() -> bool:
        from bisman_ops.rollback import runtime

        return runtime.release_lock()

    @task(task_id="write_report_and_notify")
    def write_report_and_notify() -> dict:
        from bisman_ops.rollback import runtime

        return runtime.write_report_and_notify(title, step_ids, success_summary)

    release = release_change_lock().as_teardown(setups=lock)
    report = write_report_and_notify().as_teardown(setups=lock)
    release >> report
    return release, report
