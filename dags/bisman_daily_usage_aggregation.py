"""
### Daily usage aggregation

Rolls `client_daily_usage` for the UTC day before the run into `tenant_usage`: one `day` row per
tenant and metric, and the `month` month-to-date row through that day. One transaction, set-based
SQL; re-running a day rewrites the same rows.

**Reads** `client_daily_usage` (that day, and the month so far), `tenant_usage` (which days of the
month are aggregated already). **Writes** `tenant_usage` only: day rows for the day, month rows for
its month (through the latest aggregated day, so a backfilled older day never rolls the month
back; rows with an unchanged quantity are not rewritten). **Sends** nothing. Emits the
`tenant_usage` asset. Connection: `bisman_app_db` (through PgBouncer).

**Backfill** a past range (late usage, a missed day) from the UI's *Backfill* action or
`airflow backfill create --dag-id bisman_daily_usage_aggregation --from-date ... --to-date ...`:
each run aggregates the day of its own data interval, in any order. `catchup` is off so that
enabling the DAG does not replay the whole year; gaps are filled by an explicit backfill.
"""

from __future__ import annotations

from airflow.sdk import DAG, Asset, CronDataIntervalTimetable, task

from bisman_ops.dag_defaults import START_DATE, cron_from_env
from bisman_ops.recurring import dag_parts

DAG_ID = "bisman_daily_usage_aggregation"
TENANT_USAGE = Asset("tenant_usage")

with DAG(
    dag_id=DAG_ID,
    # Data intervals (not trigger times): the run at 02:00 covers the previous day, and a backfill
    # of any past date aggregates that date.
    schedule=CronDataIntervalTimetable(cron_from_env("DAILY_AGGREGATION_CRON"), timezone="UTC"),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=dag_parts.task_args(dag_parts.DAILY_TASK_TIMEOUT),
    **dag_parts.run_args(dag_parts.DAILY_RUN_TIMEOUT),
    tags=["bisman", "recurring", "usage"],
    doc_md=__doc__,
) as dag:

    @task(outlets=[TENANT_USAGE])
    def aggregate_usage_for_day(data_interval_start=None, data_interval_end=None) -> dict:
        from bisman_ops.recurring import tasks

        return tasks.aggregate_usage(data_interval_start, data_interval_end)

    aggregate_usage_for_day()
