"""``airflow`` with the libraries the tasks use imported first, for the components that fork tasks.

The LocalExecutor forks its workers from the scheduler, a Celery worker forks its pool from its
main process, and each task process is forked from those: whatever is imported here is inherited
instead of imported again by every task. On this 2-core machine a task of the rollout spent about
half of its ~3 s importing boto3, the providers' hooks and the product's modules; the rollout's
tasks run one after the other, so that was most of a rehearsal's time.

    python -m bisman_sandbox.preloaded_airflow scheduler   # any airflow command line
"""

from __future__ import annotations

import importlib
import sys

PRELOAD = (
    "boto3",
    "airflow.providers.amazon.aws.hooks.base_aws",
    "airflow.providers.amazon.aws.hooks.dynamodb",
    "airflow.providers.amazon.aws.hooks.s3",
    "airflow.providers.postgres.hooks.postgres",
    "airflow.providers.http.hooks.http",
    "airflow.providers.smtp.hooks.smtp",
    "airflow.providers.slack.hooks.slack_webhook",
    "airflow.providers.standard.operators.hitl",
    "stripe",
    "bisman_ops.change.step",
    "bisman_ops.change_lock",
    "bisman_ops.change.notify",
    # What the DAG files import: every task process parses its DAG file again.
    "bisman_ops.change.approval",
    "bisman_ops.change.lock",
    "bisman_ops.change.report",
    "bisman_ops.dag_defaults",
    "bisman_ops.params",
    "bisman_ops.recurring.dag_parts",
    "bisman_ops.rollback.application_steps",
    "bisman_ops.rollback.database_steps",
    "bisman_ops.rollback.steps",
    "bisman_ops.rollout.preflight",
    "bisman_ops.rollout.core_infrastructure",
    "bisman_ops.rollout.read_replica",
    "bisman_ops.rollout.usage_metering",
    "bisman_ops.rollout.billing",
    "bisman_ops.rollout.scheduled_jobs",
    "bisman_ops.rollout.monitoring",
    "bisman_ops.rollout.chaos",
    "bisman_ops.rollout.post_deploy",
    "bisman_ops.rollout.rollback_offer",
)


def main() -> None:
    for name in PRELOAD:
        importlib.import_module(name)
    from airflow.__main__ import main as airflow_main

    sys.argv[0] = "airflow"
    airflow_main()


if __name__ == "__main__":
    main()
