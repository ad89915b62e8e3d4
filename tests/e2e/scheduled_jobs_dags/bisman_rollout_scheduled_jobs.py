"""Phase 5 of ``bisman_rollout`` on its own, for its end-to-end test: the same tasks as the rollout's
``scheduled_jobs`` group (the phase module's functions), between the change lock's setup and
teardown, fed a settings value as preflight would. The four recurring DAGs sit next to it."""

from __future__ import annotations

from airflow.sdk import DAG, Param, TaskGroup, chain, task

from bisman_ops.change import lock
from bisman_ops.dag_defaults import CHANGE_ARGS, START_DATE
from bisman_ops.rollout import scheduled_jobs as jobs

with DAG(
    dag_id="bisman_rollout_scheduled_jobs",
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args={**CHANGE_ARGS, "retries": 0},
    params={"environment": Param("staging", enum=["staging", "prod"]),
            "project_name": Param("bisman-erp", type="string"), **jobs.PARAMS},
) as dag:

    @task
    def rollout_settings(params=None) -> dict:
        return {"environment": params["environment"], "project_name": params["project_name"]}

    settings = rollout_settings()
    acquired = lock.acquire_change_lock(note="scheduled_jobs e2e")

    with TaskGroup(group_id="scheduled_jobs") as scheduled_jobs:
        deployed = jobs.recurring_dags_deployed()
        unpaused = jobs.recurring_dags_unpaused(deployed)
        tenants = jobs.smoke_tenants_created(settings)
        removed = jobs.smoke_tenants_removed(tenants).as_teardown(setups=tenants)
        customer_visible = jobs.customer_visible_smoke_runs_allowed(settings)
        smoke_runs = [
            jobs.smoke_run(task_id="daily_usage_aggregation_smoke_run", dag_id=jobs.DAILY_AGGREGATION),
            jobs.smoke_run(task_id="weekly_audit_smoke_run", dag_id=jobs.WEEKLY_AUDIT),
            jobs.smoke_run(task_id="quota_alerts_smoke_run", dag_id=jobs.QUOTA_ALERTS),
            jobs.smoke_run(task_id="trial_expiry_smoke_run", dag_id=jobs.TRIAL_EXPIRY),
        ]
        effects = [
            jobs.usage_aggregated_for_a_day(tenants),
            jobs.weekly_audit_report_written(),
            jobs.quota_alert_sent_once(tenants),
            jobs.trial_downgraded(tenants),
        ]
        jobs_gate = jobs.scheduled_jobs_gate(deployed, unpaused)
        chain(unpaused, tenants, [*smoke_runs[:2], customer_visible])
        customer_visible >> smoke_runs[2:]
        chain(smoke_runs, effects)
        chain(effects, removed, jobs_gate)
        effects >> jobs_gate

    @task
    def after_the_phase() -> str:
        """Stands for monitoring: must not run when the phase failed."""
        return "ran"

    released = lock.release_change_lock().as_teardown(setups=acquired)
    chain(settings, acquired, scheduled_jobs, after_the_phase(), released)
