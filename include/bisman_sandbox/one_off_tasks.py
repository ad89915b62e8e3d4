"""The sandbox's ``OneOffTaskRunner`` (``bisman_ops.rollout.usage_metering.one_off``).

moto keeps ECS task definitions but runs no containers (its RunTask even fails on a Fargate task
definition), so the sandbox runs the one command it knows, the application's migrations, for real:
``bisman_ops.migrations`` against the sandbox's primary (the versioned migrations the sandbox's
schema comes from; a second run applies nothing). It writes the command's output as the task's log
lines to moto's CloudWatch Logs, in the stream the ``awslogs`` driver would use, and records the exit
code for ``poll``. The rollout reads both exactly as it reads them from ECS. ``aws.settings``
registers it for Airflow: ``BISMAN_IMPL_ONE_OFF_TASK_RUNNER`` = ``IMPLEMENTATION``.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

from bisman_ops.rollout.usage_metering.one_off import MIGRATE_COMMAND, OneOffTask

IMPLEMENTATION = f"{__name__}:SandboxOneOffTaskRunner"
STOPPED_REASON = "Essential container in task exited"


@dataclass
class SandboxOneOffTaskRunner:
    ecs: Any
    name: str = "sandbox"

    def _state(self, task_id: str):
        from bisman_sandbox.context import SandboxContext

        return SandboxContext.from_env().path("one_off_tasks", f"{task_id}.json")

    def start(self, task: OneOffTask) -> dict[str, Any]:
        # What RunTask would refuse: an unknown task definition, a container it does not have.
        td = self.ecs.describe_task_definition(taskDefinition=task.task_definition)["taskDefinition"]
        if task.container not in {c["name"] for c in td["containerDefinitions"]}:
            raise ValueError(f"container {task.container} is not in {task.task_definition}")
        if tuple(task.command) != MIGRATE_COMMAND:
            raise ValueError(f"the sandbox runs only the migration command, not {' '.join(task.command)}")
        # Like ECS's clientToken: the same token is the same task, started once.
        task_id = hashlib.sha256(task.client_token.encode()).hexdigest()[:32]
        account_prefix = td["taskDefinitionArn"].split(":task-definition/")[0]
        arn = f"{account_prefix}:task/{task.cluster.rsplit('/', 1)[-1]}/{task_id}"
        state = self._state(task_id)
        if not state.exists():
            exit_code, lines = self._migrate()
            self._ship_logs(task, task_id, lines)
            state.write_text(json.dumps({"exit_code": exit_code}))
        return {"task_arn": arn, "task_id": task_id}

    def poll(self, task: OneOffTask, task_arn: str) -> dict[str, Any]:
        state = self._state(task_arn.rsplit("/", 1)[-1])
        if not state.exists():
            return {"status": "MISSING", "exit_code": None, "stopped_reason": "unknown task"}
        return {"status": "STOPPED", "exit_code": json.loads(state.read_text())["exit_code"],
                "stopped_reason": STOPPED_REASON}

    @staticmethod
    def _migrate() -> tuple[int, list[str]]:
        from bisman_ops import migrations
        from bisman_sandbox import postgres
        from bisman_sandbox.context import SandboxContext

        lines: list[str] = []
        try:
            if not migrations.migrate(postgres.dsn(SandboxContext.from_env(), "primary"), log=lines.append):
                lines.append("nothing to apply")
            return 0, lines
        except Exception as exc:  # the task's exit code and last log line, as the CLI would print them
            lines.append(f"migrations: {exc}")
            return 1, lines

    def _ship_logs(self, task: OneOffTask, task_id: str, lines: list[str]) -> None:
        from bisman_sandbox import aws
        from bisman_sandbox.context import SandboxContext

        stream = task.log_stream(task_id)
        if not task.log_group or not stream:
            return
        logs = aws.client(SandboxContext.from_env(), "logs")
        try:
            logs.create_log_stream(logGroupName=task.log_group, logStreamName=stream)
        except logs.exceptions.ResourceAlreadyExistsException:
            pass
        now = int(time.time() * 1000)
        logs.put_log_events(logGroupName=task.log_group, logStreamName=stream,
                            logEvents=[{"timestamp": now, "message": line} for line in lines])
