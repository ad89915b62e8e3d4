"""
### Trial expiry

Hourly: tenants still `trialing` whose `trial_ends_at` has passed are downgraded to `free` (or moved
to their active Stripe subscription's plan), with one `trial.expired` / `trial.converted` event each
and an email to the tenant. Works from the current state, so a missed hour is caught by the next run.

**Reads** `tenants`; Stripe subscriptions (`bisman_stripe`). **Writes** `tenants.plan`/`status`,
events `trial.expired` / `trial.converted` (dedup_key per tenant and trial end), and after each mail
a `trial.notified` event; **cancels** in Stripe the still-open subscription of a trial that did not
convert (idempotency key per subscription and trial). **Sends** one email per ended trial to the
tenant's `billing_email` (`smtp_default`). A Stripe outage fails `end_expired_trials` with the
affected tenants untouched; a failed mail stays pending and the next run sends it. A failed task
fails the run (the `watcher` leaf) and tells the team; every task and the run are time-bounded.
"""

from __future__ import annotations

from airflow.sdk import DAG, task

from bisman_ops.dag_defaults import START_DATE, cron_from_env
from bisman_ops.recurring import dag_parts

DAG_ID = "bisman_trial_expiry"

with DAG(
    dag_id=DAG_ID,
    schedule=cron_from_env("TRIAL_EXPIRY_CRON"),
    start_date=START_DATE,
    catchup=False,  # state-based: the latest run handles every expired trial
    max_active_runs=1,
    default_args=dag_parts.task_args(dag_parts.HOURLY_TASK_TIMEOUT),
    **dag_parts.run_args(dag_parts.HOURLY_RUN_TIMEOUT),
    tags=["bisman", "recurring", "billing"],
    doc_md=__doc__,
) as dag:

    @task
    def end_expired_trials(data_interval_end=None) -> dict:
        from bisman_ops.recurring import tasks

        return tasks.expire_trials(data_interval_end)

    # all_done: trials ended before a Stripe failure still get their mail.
    @task(trigger_rule="all_done")
    def mail_ended_trials() -> dict:
        from bisman_ops.recurring import tasks

        return tasks.mail_trial_notices()

    end_expired_trials() >> mail_ended_trials()
    # A failed task fails the run (mail_ended_trials' all_done success would otherwise end it success).
    list(dag.tasks) >> dag_parts.watcher()
