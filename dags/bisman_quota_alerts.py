"""
### Quota alerts

Hourly at :30: usage against each tenant's effective quota; crossing 80% or 100% alerts the tenant
(email) and the team (email and Slack), once per tenant, metric, period and threshold.

**Reads** `tenants`, `tenant_quotas` (a tenant's override, NULL = unlimited) else `plan_quotas`,
`tenant_usage` month rows plus `client_daily_usage` for days not aggregated yet (month quotas) and
today's `client_daily_usage` (day quotas); a day or month that ended since the previous successful
run is evaluated as well, so a crossing between a period's last run and its end is alerted.
**Writes** one `quota.alert` event per (tenant, metric, period, period start, threshold): the alert
is claimed (`bisman_ops_claims`, committed), mailed with no transaction open, then recorded, so a
failed mail is retried by the next run and two runs at once alert once; usage past 100% gets the
100% alert, not a stale 80% one. **Sends** the tenant's mail (`smtp_default`), then a team summary
by email (`BISMAN_TEAM_EMAIL`) and Slack (`bisman_slack_webhook`), each once per run
(`quota.alert_summary` events). Thresholds: the `thresholds` param. A failed task fails the run
(the `watcher` leaf) and tells the team; every task and the run are time-bounded.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param, task

from bisman_ops.dag_defaults import START_DATE, cron_from_env
from bisman_ops.recurring import dag_parts

DAG_ID = "bisman_quota_alerts"

with DAG(
    dag_id=DAG_ID,
    schedule=cron_from_env("QUOTA_ALERT_CRON"),
    start_date=START_DATE,
    catchup=False,  # state-based: the latest run sees all usage so far
    max_active_runs=1,
    default_args=dag_parts.task_args(dag_parts.HOURLY_TASK_TIMEOUT),
    **dag_parts.run_args(dag_parts.HOURLY_RUN_TIMEOUT),
    tags=["bisman", "recurring", "usage"],
    doc_md=__doc__,
    params={
        "thresholds": Param([80, 100], type="array", items={"type": "integer", "minimum": 1, "maximum": 1000},
                            minItems=1, title="Thresholds (% of quota)",
                            description="Usage percentages that alert; each alerts once per period."),
    },
) as dag:

    @task
    def send_tenant_alerts(params=None, run_id=None, data_interval_end=None,
                           prev_data_interval_end_success=None) -> dict:
        from bisman_ops.recurring import tasks

        return tasks.send_quota_alerts(data_interval_end, run_id, params["thresholds"],
                                       previous=prev_data_interval_end_success)

    # all_done: the team hears about the alerts that did go out even when some mails failed.
    @task(trigger_rule="all_done")
    def send_team_summary(run_id=None, dag_run=None, data_interval_end=None) -> dict:
        from bisman_ops.recurring import tasks

        since = tasks.summary_since(dag_run.start_date if dag_run else None, data_interval_end)
        return tasks.send_quota_team_summary(run_id, since)

    send_tenant_alerts() >> send_team_summary()
    # A failed task fails the run (send_team_summary's all_done success would otherwise end it success).
    list(dag.tasks) >> dag_parts.watcher()
