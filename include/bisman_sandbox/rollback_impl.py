"""The sandbox's implementations of the rollbacks' interfaces (bisman_ops.rollback.interfaces),
registered through ``BISMAN_IMPL_*`` by the service modules' ``settings``.

- ``SandboxDatabaseEndpoints``: moto records a restored instance but runs no server; the first
  time a rollback asks where an instance restored from a snapshot answers SQL, a real PostgreSQL
  is made for it (the sandbox primary at the snapshot's time: its restore base replayed from the
  WAL archive) and its port is the answer. The environments' own primaries answer at the sandbox
  primary.
- ``SandboxPgBouncerConfig``: PgBouncer's ini in the state folder.
- ``SandboxServiceTasks``: moto's ECS never lists a service's tasks; the service's own running
  count on its task definition stands for them.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

from bisman_ops.rollback import tags_of
from bisman_sandbox import pgbouncer, postgres
from bisman_sandbox.context import HOST, SandboxContext


class SandboxDatabaseEndpoints:
    def __init__(self, ctx: SandboxContext | None = None) -> None:
        self.ctx = ctx or SandboxContext.from_env()

    def endpoint(self, rds: Any, identifier: str) -> tuple[str, int]:
        found = rds.describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"][0]
        snapshot = tags_of(found.get("TagList")).get("bisman:restored-from")
        if snapshot:
            return HOST, postgres.ensure_restored(self.ctx, identifier, at=_snapshot_time(rds, snapshot))
        if found.get("ReadReplicaSourceDBInstanceIdentifier"):
            return HOST, self.ctx.port("postgres_replica")
        return HOST, self.ctx.port("postgres_primary")


def _snapshot_time(rds: Any, snapshot: str) -> datetime:
    """When moto took the snapshot: the point in time its restore holds."""
    created = rds.describe_db_snapshots(DBSnapshotIdentifier=snapshot)["DBSnapshots"][0]["SnapshotCreateTime"]
    return created if isinstance(created, datetime) else datetime.fromisoformat(str(created))


class SandboxPgBouncerConfig:
    def __init__(self, ctx: SandboxContext | None = None) -> None:
        self.path = pgbouncer.folder(ctx or SandboxContext.from_env()) / "pgbouncer.ini"
        self.where = str(self.path)

    def read(self) -> str:
        return self.path.read_text()

    def write(self, text: str) -> None:
        stat = self.path.stat()
        tmp = Path(f"{self.path}.new")
        tmp.write_text(text)
        os.chown(tmp, stat.st_uid, stat.st_gid)  # PgBouncer runs as postgres and must read it
        tmp.chmod(stat.st_mode & 0o777)
        tmp.replace(self.path)


class SandboxServiceTasks:
    def running(self, ecs: Any, cluster: str, service: str) -> list[dict]:
        svc = ecs.describe_services(cluster=cluster, services=[service])["services"][0]
        ref = svc.get("taskDefinition", "")
        arn = (
            ref
            if ref.startswith("arn:")
            else ecs.describe_task_definition(taskDefinition=ref)["taskDefinition"]["taskDefinitionArn"]
        )
        return [
            {"id": f"sandbox-{i}", "task_definition": arn} for i in range(int(svc.get("runningCount", 0)))
        ]
