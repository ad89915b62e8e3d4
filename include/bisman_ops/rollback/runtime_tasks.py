"""Tasks every rollback DAG ends with, built here once: release the change lock, then write the
report and tell the team. Both are teardowns of ``acquire_change_lock``, so they run however the
work ended (failed, refused, rejected at approval) and never decide the run's state."""

from __future__ import annotations

from airflow.sdk import task


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
