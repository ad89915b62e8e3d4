"""Building blocks the rollout DAG file declares its tasks with. Cheap to import at parse time: the
task bodies (``bisman_ops.rollout.tasks``) and their client libraries load only when a task runs."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import task

from bisman_ops.rollout.sensors import GateSensor


def step(task_id: str, **task_kwargs: Any):
    """A task whose body is ``bisman_ops.rollout.tasks.<task_id>``; returns its measurements."""

    @task(task_id=task_id, **task_kwargs)
    def _step(**context):
        from bisman_ops.rollout import tasks

        return tasks.run_step(task_id, context)

    return _step()


def branch(task_id: str, **task_kwargs: Any):
    """A branch whose choice is made by ``bisman_ops.rollout.tasks.<task_id>``."""

    @task.branch(task_id=task_id, **task_kwargs)
    def _branch(**context):
        from bisman_ops.rollout import tasks

        return getattr(tasks, task_id)(context)

    return _branch()


def wait_for(
    task_id: str,
    *,
    timeout_param: str | None = None,
    timeout: timedelta = timedelta(minutes=30),
    poke_interval: timedelta = timedelta(seconds=15),
    **kwargs: Any,
) -> GateSensor:
    """A reschedule-mode sensor poking ``bisman_ops.rollout.tasks.<task_id>``."""
    return GateSensor(
        task_id=task_id,
        poke_function=task_id,
        timeout_param=timeout_param,
        timeout=timeout.total_seconds(),
        poke_interval=poke_interval.total_seconds(),
        mode="reschedule",
        **kwargs,
    )


def approval(task_id: str, plan_task_id: str, response_timeout: timedelta):
    """The human approval of the Terraform plan, showing what ``plan_task_id`` summarised.

    Reject skips every later non-teardown task, so nothing is applied and the teardowns (lock,
    report) still run.
    """
    from bisman_ops.rollout.approval import PlanApproval

    pulled = f"ti.xcom_pull(task_ids='{plan_task_id}')"
    return PlanApproval(
        task_id=task_id,
        subject="{{ " + pulled + "['approval_subject'] }}",
        body="{{ " + pulled + "['approval_body'] }}",
        response_timeout=response_timeout,
        ignore_downstream_trigger_rules=True,
    )
