"""The application rollback's tasks (bisman_rollback_application), each a step of the change
layer. Airflow clients are obtained here; the checks live in ``rollback.application``."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from bisman_ops.change.report import Section
from bisman_ops.change.step import Poke, Result, context, step
from bisman_ops.rollback import application, resource_names


def _ecs(attempts: int | None = None) -> Any:
    from bisman_ops.clients import aws

    return aws.client("ecs", attempts=attempts)


def _plan(plan: dict) -> application.ApplicationRollbackPlan:
    return application.ApplicationRollbackPlan.from_dict(plan)


@step(lease=False)
def validate_request() -> Result:
    """The request checked and the target resolved before the lock is taken or anyone is paged."""
    p = context()["params"]
    plan = application.validate_request(
        _ecs(),
        names=resource_names(p["environment"]),
        cluster=p.get("cluster"),
        service=p.get("service"),
        task_definition=p["task_definition"],
        confirm=p.get("confirm"),
    )
    section = Section("Plan")
    section.table("Images", ["container", "current", "target"], plan.image_rows())
    section.table(
        "Environment and secrets that differ (names only)", ["container", "name", "change"], plan.env_changes
    )
    return Result(
        value=plan.to_dict(),
        measured={
            "service": f"{plan.cluster}/{plan.service}",
            "in environment": plan.bound_by,
            "current": plan.current.ref,
            "target": plan.target.ref,
            "target resolved from": plan.resolved_by,
            "settings that differ": len(plan.env_changes),
        },
        sections=[section],
        hint="no_change" if plan.no_change else None,
    )


@step(changes=True)
def update_service(plan: dict) -> dict:
    """Point the service at the target, once (a retry follows the deployment already started)."""
    rollback = _plan(plan)
    if rollback.no_change:
        return {"deployment_id": None, "deployed": False, "skipped": f"already on {rollback.target.ref}"}
    return application.start_rollback(_ecs(attempts=1), rollback) | {
        "updated": f"{rollback.service}: {rollback.current.ref} -> {rollback.target.ref}"
    }


@step.sensor(
    poke_interval=timedelta(seconds=15), timeout=timedelta(hours=1), timeout_param="wait_timeout_seconds"
)
def service_stable(plan: dict, update: dict) -> Poke:
    if not update.get("deployment_id"):
        return Poke(True, {"skipped": "nothing was updated"})
    return application.deployment_poke(
        _ecs(), plan["cluster"], plan["service"], plan["target"]["arn"], update["deployment_id"]
    )


@step
def tasks_on_target(plan: dict) -> dict:
    """Every running task of the service runs the target revision."""
    from bisman_ops.rollback import interfaces

    return application.verify_running_tasks(
        _ecs(), interfaces.service_tasks(), plan["cluster"], plan["service"], plan["target"]["arn"]
    )
