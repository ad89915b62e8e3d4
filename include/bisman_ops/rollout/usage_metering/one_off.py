"""One-off ECS tasks: the application's migration command run in its own image, with the service's
task definition and network configuration, judged by its exit code and its CloudWatch log lines.

``OneOffTaskRunner`` is the small interface between the rollout and the platform: ``start`` runs
the task, ``poll`` says whether it stopped and with which exit code. ``EcsOneOffTaskRunner`` is the
AWS implementation (``RunTask`` / ``DescribeTasks`` through the Amazon provider's ``EcsHook``). A
deployment where ECS runs no containers (the local sandbox on moto) registers its own through
``bisman_ops.extension`` (``BISMAN_IMPL_ONE_OFF_TASK_RUNNER=package.module:Class``); either way the
log lines are read the same way, from the stream the ``awslogs`` driver names
``<stream prefix>/<container>/<task id>``.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from bisman_ops.change.errors import CheckFailed
from bisman_ops.change.step import Poke

RUNNER_EXTENSION = "one_off_task_runner"
MIGRATE_COMMAND = ("npx", "prisma", "migrate", "deploy")  # the application image's migration command
STARTED_BY = "bisman-rollout"
MAX_LOG_LINES = 200


@dataclass(frozen=True)
class OneOffTask:
    """What to run: the service's task definition and network, one container's command overridden."""

    cluster: str
    task_definition: str  # ARN
    container: str
    command: tuple[str, ...]
    network_configuration: dict
    launch_type: str | None
    capacity_provider_strategy: tuple[dict, ...]
    platform_version: str | None
    client_token: str  # the same for every try of one run: ECS starts the task once
    log_group: str | None
    log_stream_prefix: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> OneOffTask:
        return cls(**{**values, "command": tuple(values["command"]),
                      "capacity_provider_strategy": tuple(values["capacity_provider_strategy"])})

    def log_stream(self, task_id: str) -> str | None:
        return f"{self.log_stream_prefix}/{self.container}/{task_id}" if self.log_stream_prefix else None


class OneOffTaskRunner(Protocol):
    """Runs a ``OneOffTask``. Constructed with an ECS client."""

    name: str

    def start(self, task: OneOffTask) -> dict[str, Any]:
        """Start it; ``{"task_arn", "task_id"}``."""

    def poll(self, task: OneOffTask, task_arn: str) -> dict[str, Any]:
        """``{"status": lastStatus, "exit_code": int | None, "stopped_reason": str}``."""


@dataclass
class EcsOneOffTaskRunner:
    """AWS: ``RunTask`` with the service's network configuration, ``DescribeTasks`` to follow it."""

    ecs: Any
    name: str = "ecs"

    def start(self, task: OneOffTask) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "cluster": task.cluster, "taskDefinition": task.task_definition, "count": 1,
            "networkConfiguration": task.network_configuration, "startedBy": STARTED_BY,
            "clientToken": task.client_token,
            "overrides": {"containerOverrides": [{"name": task.container, "command": list(task.command)}]},
        }
        if task.capacity_provider_strategy:
            kwargs["capacityProviderStrategy"] = list(task.capacity_provider_strategy)
        elif task.launch_type:
            kwargs["launchType"] = task.launch_type
        if task.platform_version:
            kwargs["platformVersion"] = task.platform_version
        answer = self.ecs.run_task(**kwargs)
        if answer.get("failures") or not answer.get("tasks"):
            raise CheckFailed(f"ECS RunTask of {task.task_definition}", answer.get("failures") or "no task",
                              "one task started", "Check the cluster's capacity and the task definition, "
                                                  "then clear this task")
        arn = answer["tasks"][0]["taskArn"]
        return {"task_arn": arn, "task_id": arn.rsplit("/", 1)[-1]}

    def poll(self, task: OneOffTask, task_arn: str) -> dict[str, Any]:
        found = self.ecs.describe_tasks(cluster=task.cluster, tasks=[task_arn])
        if not found.get("tasks"):
            return {"status": "MISSING", "exit_code": None, "stopped_reason": str(found.get("failures"))}
        t = found["tasks"][0]
        container = next((c for c in t.get("containers") or [] if c.get("name") == task.container), {})
        return {"status": t.get("lastStatus"), "exit_code": container.get("exitCode"),
                "stopped_reason": t.get("stoppedReason") or container.get("reason") or ""}


def runner(ecs: Any, environ: dict | None = None) -> OneOffTaskRunner:
    """The configured runner (``BISMAN_IMPL_ONE_OFF_TASK_RUNNER``), else ``EcsOneOffTaskRunner``."""
    from bisman_ops import extension

    return extension.load(RUNNER_EXTENSION, EcsOneOffTaskRunner, environ)(ecs)


def migration_task(svc: dict, task_definition: dict, container: dict, run_key: str,
                   command: tuple[str, ...] = MIGRATE_COMMAND) -> OneOffTask:
    """The migration command as a one-off task of the service's running task definition."""
    options = (container.get("logConfiguration") or {}).get("options") or {}
    token = hashlib.sha256(f"{run_key}/{task_definition['taskDefinitionArn']}".encode()).hexdigest()[:36]
    return OneOffTask(
        cluster=svc["clusterArn"], task_definition=task_definition["taskDefinitionArn"],
        container=container["name"], command=tuple(command),
        network_configuration=svc.get("networkConfiguration") or {},
        launch_type=svc.get("launchType"),
        capacity_provider_strategy=tuple(svc.get("capacityProviderStrategy") or ()),
        platform_version=svc.get("platformVersion"), client_token=token,
        log_group=options.get("awslogs-group"), log_stream_prefix=options.get("awslogs-stream-prefix"),
    )


def log_lines(logs: Any, group: str | None, stream: str | None, limit: int = MAX_LOG_LINES) -> list[str]:
    """The task's log lines from CloudWatch Logs, oldest first (empty when it wrote none yet)."""
    if not group or not stream:
        return []
    lines: list[str] = []
    kwargs: dict[str, Any] = {"logGroupName": group, "logStreamName": stream, "startFromHead": True}
    try:
        while len(lines) < limit:
            page = logs.get_log_events(**kwargs)
            lines.extend(e["message"].rstrip("\n") for e in page.get("events", []))
            token = page.get("nextForwardToken")
            if not page.get("events") or not token or token == kwargs.get("nextToken"):
                break
            kwargs["nextToken"] = token
    except Exception as exc:
        from bisman_ops.clients.aws import error_code

        if error_code(exc) != "ResourceNotFoundException":
            raise
    return lines[:limit]


def migration_verdict(task: OneOffTask, started: dict[str, Any], state: dict[str, Any],
                      lines: list[str]) -> Poke:
    """Done when the task stopped with exit code 0; CheckFailed (with its last log lines) when it
    stopped otherwise."""
    measured = {"command": " ".join(task.command), "task_id": started["task_id"],
                "task_definition": task.task_definition.rsplit("/", 1)[-1], "status": state["status"],
                "exit_code": state.get("exit_code"), "log_stream": task.log_stream(started["task_id"]),
                "log_lines": lines[-20:],
                "applied": [line.split(" ", 1)[1] for line in lines if line.startswith("applied ")],
                "no_op": any("nothing to apply" in line.lower() or "no pending migrations" in line.lower()
                             for line in lines)}
    if state["status"] != "STOPPED":
        return Poke(False, measured, f"migration task {started['task_id']} is {state['status']}")
    if state.get("exit_code") != 0:
        raise CheckFailed(f"migration task {started['task_id']} ({measured['command']})",
                          f"stopped with exit code {state.get('exit_code')} ({state.get('stopped_reason')}); "
                          f"last log lines: {' | '.join(lines[-5:]) or 'none'}",
                          "exit code 0", "Read the task's log stream, fix the migration, then clear "
                                         "migrations_task_started", measured)
    if not lines:
        return Poke(False, measured, f"log lines of task {started['task_id']} in {task.log_group}")
    return Poke(True, measured)
