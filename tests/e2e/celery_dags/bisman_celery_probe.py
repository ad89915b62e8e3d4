"""A test-only DAG for the CeleryExecutor test: parallel tasks that take long enough for a worker
to be stopped under them, retried on the worker that is left."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, task

with DAG(
    dag_id="bisman_celery_probe",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    default_args={"retries": 3, "retry_delay": timedelta(seconds=2),
                  "execution_timeout": timedelta(minutes=5)},
):

    @task
    def hold(seconds: int, index: int) -> int:
        import time

        time.sleep(seconds)
        return index

    hold.partial(seconds=20).expand(index=list(range(6)))
