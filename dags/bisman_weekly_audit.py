"""
### Weekly audit

Sunday 00:00 UTC, for the previous ISO week: usage and quota breaches, trials, payment failures,
Stripe reconciliation and AWS security posture, written to S3 as JSON and Markdown and mailed.
Findings are data, not failures: the task fails only when the audit cannot run.
"""

from __future__ import annotations

from airflow.sdk import DAG

from bisman_ops.dag_defaults import DEFAULT_ARGS, START_DATE, cron_from_env, not_built

DAG_ID = "bisman_weekly_audit"

with DAG(
    dag_id=DAG_ID,
    schedule=cron_from_env("WEEKLY_AUDIT_CRON"),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["bisman", "recurring", "audit"],
    doc_md=__doc__,
) as dag:
    not_built("run_weekly_audit", "issue: recurring DAGs")
