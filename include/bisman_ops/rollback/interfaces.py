"""Where a rollback meets the platform it runs on: three small interfaces, their AWS
implementations, and the loaders that let a deployment swap one in by configuration
(``bisman_ops.extension``: ``BISMAN_IMPL_<NAME>=package.module:attribute``).

- ``DatabaseEndpoints`` — where SQL reaches an RDS instance (AWS: the instance's endpoint).
- ``PgBouncerConfig`` — how PgBouncer's ``[databases]`` entry is rewritten before RELOAD. There is
  no AWS default: where PgBouncer keeps its configuration is the deployment's business, so without
  an implementation configured a traffic switch is refused before anything changes.
- ``ServiceTasks`` — the running tasks of an ECS service (AWS: ListTasks + DescribeTasks).
"""

from __future__ import annotations

from typing import Any, Protocol

from bisman_ops import extension


class DatabaseEndpoints(Protocol):
    def endpoint(self, rds: Any, identifier: str) -> tuple[str, int]:
        """``(host, port)`` where SQL reaches the instance ``identifier``."""


class PgBouncerConfig(Protocol):
    where: str  # what the report shows as the configuration's place

    def read(self) -> str: ...

    def write(self, text: str) -> None: ...


class ServiceTasks(Protocol):
    def running(self, ecs: Any, cluster: str, service: str) -> list[dict]:
        """The service's RUNNING tasks as ``{"id", "task_definition"}``."""


class RdsEndpoints:
    def endpoint(self, rds: Any, identifier: str) -> tuple[str, int]:
        from bisman_ops.change.errors import CheckFailed

        found = rds.describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"]
        endpoint = (found[0] if found else {}).get("Endpoint") or {}
        if not endpoint.get("Address"):
            raise CheckFailed(
                f"endpoint of {identifier}",
                "none yet",
                "an address",
                "wait until the instance is available, then clear this task",
            )
        return endpoint["Address"], int(endpoint.get("Port") or 5432)


class EcsServiceTasks:
    def running(self, ecs: Any, cluster: str, service: str) -> list[dict]:
        arns: list[str] = []
        for page in ecs.get_paginator("list_tasks").paginate(
            cluster=cluster, serviceName=service, desiredStatus="RUNNING"
        ):
            arns.extend(page["taskArns"])
        tasks = []
        for i in range(0, len(arns), 100):
            tasks.extend(ecs.describe_tasks(cluster=cluster, tasks=arns[i : i + 100])["tasks"])
        return [
            {"id": t["taskArn"].rsplit("/", 1)[-1], "task_definition": t.get("taskDefinitionArn", "")}
            for t in tasks
            if t.get("lastStatus") == "RUNNING"
        ]


def _instance(name: str, default: Any) -> Any:
    impl = extension.load(name, default)
    return impl() if isinstance(impl, type) else impl


def database_endpoints() -> DatabaseEndpoints:
    return _instance("database_endpoints", RdsEndpoints)


def pgbouncer_config() -> PgBouncerConfig | None:
    """The configured PgBouncer configuration, or None (then traffic is not switched)."""
    return _instance("pgbouncer_config", None)


def service_tasks() -> ServiceTasks:
    return _instance("service_tasks", EcsServiceTasks)
