"""
### Trial expiry

Hourly: tenants still `trialing` whose `trial_ends_at` has passed are downgraded to `free` (or moved
to their active Stripe subscription's plan), with one `trial.expired` / `trial.converted` event each
and an email to the tenant. Works from the current state, so a missed hour is caught by the next run.
"""

from __future__ import annotations

from airflow.sdk import DAG

from bisman_ops.dag_defaults import DEFAULT_ARGS, START_DATE, cron_from_env, not_built

DAG_ID = "bisman_trial_expiry"

with DAG(
    dag_id=DAG_ID,
    schedule=cron_from_env("TRIAL_EXPIRY_CRON"),
    start_date=START_DATE,
    catchup=False,  # state-based: the latest run handles every expired trial
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["bisman", "recurring", "billing"],
    doc_md=__doc__,
) as dag:
    not_built("expire_trials", "issue: recurring DAGs")
