"""
### Weekly audit

Sunday 00:00 UTC, for the previous ISO week: usage and quota breaches, trials, payment failures,
Stripe reconciliation and AWS security posture, written to S3 as JSON and Markdown and mailed.
Findings are data, not failures: the task fails only when the audit cannot run.

**Reads** `client_daily_usage`, `tenants`, events (`quota.alert`, `trial.*`,
`stripe.invoice.payment_failed`); every Stripe subscription (`bisman_stripe`); AWS (`aws_default`):
RDS public access, security groups open to 0.0.0.0/0 on 5432/6379/6432, the WAF web ACL of the
ALB, secrets not rotated in 90 days, certificates expiring within 30 days. **Writes**
`s3://<project>-<env>-terraform-state/reports/audit/<YYYY-Www>/report.json` and `report.md`
(rewritten by a re-run), and one `audit.completed` event per week. **Sends** the team one summary
email per week (`smtp_default`, `BISMAN_TEAM_EMAIL`). Which deployment it audits comes from the
deployment's configuration (`BISMAN_PROJECT_NAME`, `BISMAN_ENVIRONMENT`: `bisman_ops.config.deployment`),
never from a form default.
"""

from __future__ import annotations

from airflow.sdk import DAG, task

from bisman_ops.dag_defaults import START_DATE, cron_from_env
from bisman_ops.recurring import dag_parts

DAG_ID = "bisman_weekly_audit"

with DAG(
    dag_id=DAG_ID,
    schedule=cron_from_env("WEEKLY_AUDIT_CRON"),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=dag_parts.task_args(dag_parts.WEEKLY_TASK_TIMEOUT),
    **dag_parts.run_args(dag_parts.WEEKLY_RUN_TIMEOUT),
    tags=["bisman", "recurring", "audit"],
    doc_md=__doc__,
) as dag:

    @task
    def run_weekly_audit(data_interval_end=None) -> dict:
        from bisman_ops.recurring import tasks

        return tasks.run_weekly_audit(data_interval_end)

    run_weekly_audit()
