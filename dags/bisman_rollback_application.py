"""
### Roll back the application (ECS)

Runbook: when a release misbehaves, point the ECS service back at an earlier task definition.

1. Fill the form: environment, `task_definition` (`previous` or `family:revision`), the reason.
2. Type the service name in **confirm**.
3. The DAG shows what changes (current and target revision, image, environment), checks the target
   (exists, ACTIVE, same family), updates the service, waits until it is stable, and verifies health
   and that the running tasks use the target revision. Already on the target: nothing changes.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param, chain

from bisman_ops import params
from bisman_ops.dag_defaults import CHANGE_ARGS, START_DATE, not_built

DAG_ID = "bisman_rollback_application"
ISSUE = "issue: manual rollback DAGs"

with DAG(
    dag_id=DAG_ID,
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=CHANGE_ARGS,
    tags=["bisman", "rollback"],
    doc_md=__doc__,
    params={
        "environment": params.environment(),
        "cluster": params.identifier("ECS cluster", "Empty: the environment's cluster."),
        "service": params.identifier("ECS service", "Empty: the environment's service."),
        "task_definition": Param(
            "previous", type="string", pattern=params.TASK_DEFINITION_PATTERN, title="Target task definition",
            description="`previous` (the revision before the current one) or `family:revision`.",
        ),
        "reason": params.reason(),
        "confirm": params.confirm("the service name"),
    },
) as dag:
    chain(not_built("validate_request", ISSUE), not_built("update_service", ISSUE))
