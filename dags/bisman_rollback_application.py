"""
### Roll back the application (ECS)

**When:** a release misbehaves and an earlier task definition was good.
**Changes:** the ECS service's task definition. Nothing else.

**Runbook**

1. Trigger with the form: environment; cluster and service (empty: the environment's; any other
   must carry the tag `Environment=<environment>`); `task_definition` = `previous` (the last
   successful deployment before the current one, never the release just rolled back from; else
   the highest ACTIVE revision below it) or `family:revision`; the **reason**; the service name in
   **confirm**.
2. `validate_request` checks all of it before the lock is taken or anyone is paged, and shows what
   changes: current and target revision, images, and the NAMES of the environment variables and
   secrets that differ (never their values). Another family, INACTIVE or missing: refused.
3. The environment's change lock is taken, then the team is told what starts.
4. `update_service` points the service at the target once (a retry follows the deployment already
   started instead of starting another); `service_stable` waits (reschedule mode) until our
   deployment is the only one, COMPLETED, with the desired count running, up to
   `wait_timeout_seconds`. A FAILED rollout (circuit breaker) ends it at once.
5. `tasks_on_target` checks every running task uses the target; `application_healthy` waits for
   `/health`, `/api/health/db` and `/api/health/redis` to answer 200.
6. The lock is released and the report (JSON + Markdown) goes to the state bucket under
   `reports/<env>/`; the team gets the outcome with the reason.

**Already on the target:** nothing is updated; the run verifies and says "nothing changed".
**Undo:** trigger again with the revision the report names as "current".
"""

from __future__ import annotations

from airflow.sdk import DAG, Param, chain

from bisman_ops import params
from bisman_ops.change import lock, report
from bisman_ops.dag_defaults import CHANGE_ARGS, CHANGE_DAGRUN_TIMEOUT, START_DATE
from bisman_ops.rollback import application_steps, steps

DAG_ID = "bisman_rollback_application"

with DAG(
    dag_id=DAG_ID,
    schedule=None,
    dagrun_timeout=CHANGE_DAGRUN_TIMEOUT,
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
            "previous",
            type="string",
            pattern=params.TASK_DEFINITION_PATTERN,
            title="Task definition",
            description="`previous` or `family:revision`.",
        ),
        "wait_timeout_seconds": Param(
            1800,
            type="integer",
            minimum=30,
            maximum=4 * 3600,
            title="Wait for stable (seconds)",
            description="How long the deployment may take to become stable.",
        ),
        "reason": params.reason(),
        "confirm": params.confirm("the service name"),
    },
) as dag:
    begun = report.begin_run_report()
    plan = application_steps.validate_request()
    acquired = lock.acquire_change_lock(note="application rollback: {{ params.reason }}")
    started = steps.notify_team_of_start(
        what="ECS service {{ params.service or 'of ' ~ params.environment }} back to "
        "{{ params.task_definition }}"
    )
    update = application_steps.update_service(plan)
    stable = application_steps.service_stable(plan, update)
    on_target = application_steps.tasks_on_target(plan)
    healthy = steps.application_healthy()
    released = lock.release_change_lock().as_teardown(setups=acquired)
    written = report.write_run_report(
        title="Application rollback (ECS) in {{ params.environment }}",
        purpose="{{ params.reason }}",
        notify_team=True,
    ).as_teardown(setups=begun)

    chain(begun, plan, acquired, started, update, stable, on_target, healthy, released, written)
