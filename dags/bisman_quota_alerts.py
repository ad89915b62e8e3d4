"""
### Quota alerts

Hourly at :30: usage against each tenant's effective quota; crossing 80% or 100% alerts the tenant
(email) and the team (email and Slack), once per tenant, metric, period and threshold.
"""

from __future__ import annotations

from airflow.sdk import DAG

from bisman_ops.dag_defaults import DEFAULT_ARGS, START_DATE, cron_from_env, not_built

DAG_ID = "bisman_quota_alerts"

with DAG(
    dag_id=DAG_ID,
    schedule=cron_from_env("QUOTA_ALERT_CRON"),
    start_date=START_DATE,
    catchup=False,  # state-based: the latest run sees all usage so far
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["bisman", "recurring", "usage"],
    doc_md=__doc__,
) as dag:
    not_built("send_quota_alerts", "issue: recurring DAGs")
