"""
### Roll back the application (ECS)

**When:** a release misbehaves and the previous task definition was good.
**Changes:** the ECS service's task definition. Nothing else.

**Runbook**

1. Trigger with the form: environment; cluster and service (empty: the environment's);
   `task_definition` = `previous` (the last successful deployment before the current one, else the
   highest ACTIVE revision below it) or `family:revision`; the **reason** (incident id + a sentence).
2. Type the service name in **confirm**. Anything else: the run stops before any change.
3. The run takes the environment's change lock (a rollout or another rollback running: refused,
   nothing changed), tells the team it started, then `validate_request` shows what changes:
   current and target revision, image, environment differences (secret values hidden). A target of
   another family, INACTIVE or missing is refused there.
4. `update_service` points the service at the target; `service_stable` waits (reschedule mode,
   holding no worker slot) until our deployment is the only one, COMPLETED, with the desired count
   running — up to `wait_timeout_seconds`. A FAILED rollout (circuit breaker) ends it at once.
5. `verify_tasks_and_health` checks every running task uses the target and that `/health`,
   `/api/health/db` and `/api/health/redis` answer 200.
6. The lock is released and the report (JSON + Markdown) goes to
   `s3://<project>-<env>-terraform-state/reports/<env>/bisman_rollback_application/`; the team gets
   the outcome with the reason.

**Already on the target:** nothing is updated; the run verifies and says "nothing changed".
**If it fails:** read the report's error. Before `update_service` nothing changed. After it, the
service is on the target revision and ECS keeps deploying; fix the cause and clear the failed task.
**Undo:** trigger again with the revision the report names as "current".
"""

from __future__ import annotations

from airflow.sdk import DAG, Param, task

from bisman_ops import params
from bisman_ops.dag_defaults import CHANGE_ARGS, START_DATE

DAG_ID = "bisman_rollback_application"
TITLE = "Application rollback (ECS)"
STEP_IDS = [
    "acquire_change_lock",
    "notify_team_of_start",
    "validate_request",
    "update_service",
    "service_stable",
    "verify_tasks_and_health",
    "release_change_lock",
]
POKE_INTERVAL_S = 15
SENSOR_CEILING_S = 4 * 3600  # the form's wait_timeout_seconds ends it sooner


def describe_request(p: dict) -> str:
    """What the team is told is starting."""
    return (
        f"ECS service {p.get('service') or '(default)'} in {p['environment']} back to {p['task_definition']}"
    )


@task(task_id="validate_request")
def validate_request() -> dict:
    from bisman_ops.rollback import application, runtime

    p = runtime.context()["params"]
    with runtime.step("Plan") as section:
        plan = application.plan_rollback(
            runtime.aws_client("ecs"),
            environment=p["environment"],
            cluster=p.get("cluster"),
            service=p.get("service"),
            task_definition=p["task_definition"],
            confirm=p.get("confirm"),
        )
        section.add("service", f"{plan.cluster}/{plan.service}")
        section.add("current", plan.current.ref)
        section.add("target", plan.target.ref)
        section.add("target resolved from", plan.resolved_by)
        section.table("Images", ["container", "current", "target"], plan.image_rows())
        section.table(
            "Environment differences (secret values hidden)",
            ["container", "variable", "current", "target"],
            plan.env_diff,
        )
        if plan.no_change:
            section.add("no change", f"the service already runs {plan.target.ref}; nothing will be updated")
            runtime.hint("no_change")
        return plan.to_dict()


@task(task_id="update_service")
def update_service(plan: dict) -> dict:
    import time

    from bisman_ops.rollback import application, runtime

    p = runtime.context()["params"]
    with runtime.step("Update") as section:
        rollback = application.ApplicationRollbackPlan.from_dict(plan)
        if rollback.no_change:
            section.add("skipped", f"already on {rollback.target.ref}")
            return {"deployment_id": None, "deadline": time.time()}
        deployment_id = application.start_rollback(runtime.aws_client("ecs"), rollback)
        section.add("updated", f"{rollback.service}: {rollback.current.ref} -> {rollback.target.ref}")
        section.add("deployment", deployment_id)
        return {"deployment_id": deployment_id, "deadline": time.time() + int(p["wait_timeout_seconds"])}


@task.sensor(
    task_id="service_stable", mode="reschedule", poke_interval=POKE_INTERVAL_S, timeout=SENSOR_CEILING_S
)
def service_stable(plan: dict, update: dict) -> bool:
    import time

    from bisman_ops.rollback import RollbackFailed, application, runtime

    with runtime.step("Service stable") as section:
        if update["deployment_id"] is None:
            section.add("skipped", "nothing was updated")
            return True
        rollback = application.ApplicationRollbackPlan.from_dict(plan)
        progress = application.deployment_progress(
            runtime.aws_client("ecs"),
            rollback.cluster,
            rollback.service,
            rollback.target.arn,
            update["deployment_id"],
        )
        section.add("last seen", progress.detail)
        if progress.failed:
            raise RollbackFailed(f"deployment of {rollback.target.ref} failed: {progress.detail}")
        if progress.stable:
            return True
        if time.time() > update["deadline"]:
            raise RollbackFailed(
                f"service {rollback.service} not stable on {rollback.target.ref} within "
                f"wait_timeout_seconds; last seen: {progress.detail}. The service stays on the "
                "target and ECS keeps trying: check its events, then clear this task to wait "
                "again or roll back to the report's 'current' revision"
            )
        runtime.renew_lock()
        return False


@task(task_id="verify_tasks_and_health")
def verify_tasks_and_health(plan: dict) -> None:
    from bisman_ops import app_api
    from bisman_ops.rollback import application, env_flag, health, runtime

    with runtime.step("Verification") as section:
        rollback = application.ApplicationRollbackPlan.from_dict(plan)
        tasks = application.verify_running_tasks(
            runtime.aws_client("ecs"),
            rollback.cluster,
            rollback.service,
            rollback.target.arn,
            tasks_listed=env_flag(application.TASKS_LISTED_ENV, True),
        )
        section.add("tasks", tasks["checked"])
        section.table("Health", ["path", "status", "ms"], health.check_health(app_api.base_url()))


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
            "previous",
            type="string",
            pattern=params.TASK_DEFINITION_PATTERN,
            title="Target task definition",
            description="`previous` (the revision before the current one) or `family:revision`.",
        ),
        "wait_timeout_seconds": Param(
            1800,
            type="integer",
            minimum=30,
            maximum=4 * 3600,
            title="Wait for stable (seconds)",
            description="How long the service may take to become stable on the target before the run fails.",
        ),
        "reason": params.reason(),
        "confirm": params.confirm("the service name"),
    },
) as dag:
    from bisman_ops.rollback import runtime_tasks

    lock, started = runtime_tasks.opening(TITLE, describe_request)
    plan = validate_request()
    update = update_service(plan)
    stable = service_stable(plan, update)
    verified = verify_tasks_and_health(plan)
    release, report = runtime_tasks.teardowns(
        lock, TITLE, STEP_IDS, "The service runs the target revision and is healthy."
    )
    started >> plan
    stable >> verified >> release >> report
