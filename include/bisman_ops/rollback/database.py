"""Database rollback: restore an RDS snapshot into a NEW instance; the original is never deleted,
renamed or modified.

``validate_request`` checks everything first (identifiers by RDS's rules, instance and target
inside the environment, the snapshot, whether traffic can be switched) and says how much data the
snapshot loses; ``take_pre_rollback_snapshot`` snapshots the live instance so the rollback itself
can be undone; ``restore`` creates the new instance with the original's settings; the ``*_poke``
functions are the sensors' single looks; ``verify_restored`` runs SQL on the new instance.

Traffic moves through PgBouncer only: ``switch_pgbouncer`` rewrites PgBouncer's ``[databases]``
entry (through the configured ``PgBouncerConfig``), PAUSEs the pool for a bounded time, RELOADs,
RESUMEs, and then ``verify_switch`` proves it from ``SHOW DATABASES`` and from a query through
PgBouncer that lands on the restored server. The read-only pools served by a read replica of the
original (``replica_endpoints``) move with it to the restored instance, which has no replica of its
own yet: left on the old replica they would serve reads of the abandoned lineage while writes go to
the restored one. ``verify_followers`` proves them the same way. Once a replica of the restored
instance exists, point the read-only pools at it through PgBouncer's deployment.

The application's secret is never rewritten: a ``DATABASE_URL`` that names the instance directly
would need a redeploy of every task (old tasks would keep writing to the original), so such a
request is refused before anything changes.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bisman_ops.change.errors import CheckFailed
from bisman_ops.change.step import Poke
from bisman_ops.clients.aws import error_code
from bisman_ops.clients.rds import INSTANCE_TERMINAL, SNAPSHOT_TERMINAL
from bisman_ops.naming import ResourceNames
from bisman_ops.rollback import (
    NOTHING_CHANGED,
    check_confirm,
    check_in_environment,
    check_rds_identifier,
    mask,
    tags_of,
)

SQL_DIR = Path(__file__).with_name("sql")
APPLICATION_TABLES = (
    "tenants",
    "plan_quotas",
    "tenant_quotas",
    "client_daily_usage",
    "tenant_usage",
    "events",
)
MAX_ID = 63
DEFAULT_PAUSE_TIMEOUT_S = 30


def run_stamp(run_id: str) -> str:
    """A short stable suffix per run, so retried steps derive the same names."""
    return hashlib.sha256(run_id.encode()).hexdigest()[:8]


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def describe_instance(rds: Any, identifier: str) -> dict | None:
    try:
        return rds.describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"][0]
    except Exception as exc:
        if error_code(exc) == "DBInstanceNotFound":
            return None
        raise


def describe_snapshot(rds: Any, identifier: str) -> dict | None:
    try:
        found = rds.describe_db_snapshots(DBSnapshotIdentifier=identifier)["DBSnapshots"]
    except Exception as exc:
        if error_code(exc) == "DBSnapshotNotFound":
            return None
        raise
    return found[0] if found else None


def latest_snapshot(rds: Any, instance: str) -> dict | None:
    snapshots = []
    for page in rds.get_paginator("describe_db_snapshots").paginate(DBInstanceIdentifier=instance):
        snapshots.extend(s for s in page["DBSnapshots"] if s.get("Status") == "available")
    return max(snapshots, key=lambda s: s["SnapshotCreateTime"], default=None)


def human_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    parts = [f"{days} d"] if days else []
    parts += [f"{hours} h"] if hours or days else []
    parts.append(f"{rest // 60} min")
    return " ".join(parts)


@dataclass
class DatabaseRollbackPlan:
    environment: str
    instance: str
    snapshot: str
    snapshot_time: str
    data_loss_seconds: float
    target: str
    pre_rollback_snapshot: str
    instance_class: str
    subnet_group: str | None
    security_group_ids: list[str]
    parameter_group: str | None
    port: int
    multi_az: bool
    storage_type: str | None
    switch_traffic: bool
    bound_by: str = ""

    @property
    def data_loss(self) -> str:
        return (
            f"everything written after {self.snapshot_time} ({human_duration(self.data_loss_seconds)} "
            "before this check) is not in the restored instance"
        )

    def approval_text(self, reason: str) -> str:
        return (
            f"Point the application at **{self.target}** (restored from `{self.snapshot}`, taken "
            f"{self.snapshot_time}).\n\n**Data loss:** {self.data_loss}.\n\nThe original `{self.instance}` "
            f"stays as it is; pre-rollback snapshot `{self.pre_rollback_snapshot}`.\n\nReason given: {reason}"
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> DatabaseRollbackPlan:
        return cls(**d)


def _secret_database_host(sm: Any, secret_id: str) -> str | None:
    """The host ``DATABASE_URL`` names in the application's secret (the value is masked)."""
    raw = sm.get_secret_value(SecretId=secret_id)["SecretString"]
    mask(raw)
    try:
        url = json.loads(raw).get("DATABASE_URL") or ""
    except ValueError:
        return None
    mask(url)
    return urlsplit(url).hostname


def validate_request(
    rds: Any,
    sm: Any,
    *,
    names: ResourceNames,
    db_instance_identifier: str | None,
    snapshot_identifier: str,
    target_instance_identifier: str | None,
    switch_traffic: bool,
    confirm: str | None,
    run_id: str,
    switch_available: bool,
    now: datetime | None = None,
) -> DatabaseRollbackPlan:
    """Check the request before anything else happens; raises CheckFailed and changes nothing."""
    instance_id = check_rds_identifier(
        db_instance_identifier or names.db_instance_identifier, "db_instance_identifier"
    )
    if target_instance_identifier:
        check_rds_identifier(target_instance_identifier, "target_instance_identifier")
    check_confirm(confirm, instance_id, "the DB instance identifier")
    instance = describe_instance(rds, instance_id)
    if instance is None:
        raise CheckFailed(
            "DB instance", f"{instance_id!r} not found", "an existing instance", NOTHING_CHANGED
        )
    bound_by = check_in_environment(
        "DB instance", instance_id, names.db_instance_identifier, tags_of(instance.get("TagList")), names
    )
    if instance.get("ReadReplicaSourceDBInstanceIdentifier"):
        raise CheckFailed(
            "DB instance",
            f"{instance_id} is a read replica",
            f"its primary {instance['ReadReplicaSourceDBInstanceIdentifier']}",
            NOTHING_CHANGED,
        )

    if snapshot_identifier == "latest":
        snapshot = latest_snapshot(rds, instance_id)
        if snapshot is None:
            raise CheckFailed("snapshot", f"no available snapshot of {instance_id}", "one", NOTHING_CHANGED)
    else:
        snapshot = describe_snapshot(rds, snapshot_identifier)
        if snapshot is None:
            raise CheckFailed(
                "snapshot",
                f"{snapshot_identifier!r} does not exist",
                f"one of `aws rds describe-db-snapshots --db-instance-identifier {instance_id}`",
                NOTHING_CHANGED,
            )
        if snapshot.get("DBInstanceIdentifier") != instance_id:
            raise CheckFailed(
                "snapshot",
                f"{snapshot_identifier} belongs to {snapshot.get('DBInstanceIdentifier')!r}",
                f"a snapshot of {instance_id}",
                NOTHING_CHANGED,
            )
        if snapshot.get("Status") != "available":
            raise CheckFailed(
                "snapshot",
                f"{snapshot_identifier} is {snapshot.get('Status')!r}",
                "available",
                "wait until it is, then trigger again. Nothing was changed",
            )
    taken = snapshot["SnapshotCreateTime"]
    now = now or datetime.now(UTC)

    stamp = run_stamp(run_id)
    target = target_instance_identifier or f"{instance_id[: MAX_ID - 12].rstrip('-')}-rb-{stamp}"
    if target.lower() == instance_id.lower():
        raise CheckFailed(
            "target_instance_identifier", target, "a NEW instance's name (empty: derived)", NOTHING_CHANGED
        )
    existing = describe_instance(rds, target)
    if existing is not None and not _restored_by_us(existing, run_id):
        raise CheckFailed(
            "target_instance_identifier",
            f"{target} already exists ({existing.get('DBInstanceStatus')})",
            "a new name",
            NOTHING_CHANGED,
        )
    pre_snapshot = f"{instance_id[: MAX_ID - 22].rstrip('-')}-pre-rollback-{stamp}"

    if switch_traffic:
        if not switch_available:
            raise CheckFailed(
                "switch_traffic",
                "no PgBouncer configuration is set up for this Airflow (BISMAN_IMPL_PGBOUNCER_CONFIG)",
                "a PgBouncerConfig implementation",
                "restore without switch_traffic, then repoint PgBouncer by its deployment. "
                "Nothing was changed",
            )
        live = (instance.get("Endpoint") or {}).get("Address")
        host = _secret_database_host(sm, names.app_secret_name)
        if live and host == live:
            raise CheckFailed(
                "the application's DATABASE_URL",
                f"names {instance_id} directly, not PgBouncer",
                "DATABASE_URL through PgBouncer",
                "switching needs a redeploy of every task (rewriting the secret alone would split writes "
                "between the two instances): restore without switch_traffic, then change DATABASE_URL and "
                "redeploy the service. Nothing was changed",
            )
    endpoint = instance.get("Endpoint") or {}
    return DatabaseRollbackPlan(
        environment=names.environment,
        instance=instance_id,
        snapshot=snapshot["DBSnapshotIdentifier"],
        snapshot_time=_iso(taken),
        data_loss_seconds=round((now - taken).total_seconds(), 1),
        target=target,
        pre_rollback_snapshot=pre_snapshot,
        instance_class=instance["DBInstanceClass"],
        subnet_group=(instance.get("DBSubnetGroup") or {}).get("DBSubnetGroupName"),
        security_group_ids=[g["VpcSecurityGroupId"] for g in instance.get("VpcSecurityGroups", [])],
        parameter_group=next(
            (g["DBParameterGroupName"] for g in instance.get("DBParameterGroups", [])), None
        ),
        port=int(endpoint.get("Port") or instance.get("DbInstancePort") or 5432),
        multi_az=bool(instance.get("MultiAZ")),
        storage_type=instance.get("StorageType"),
        switch_traffic=switch_traffic,
        bound_by=bound_by,
    )


def _restored_by_us(instance: dict, run_id: str) -> bool:
    return tags_of(instance.get("TagList")).get("bisman:rollback-run") == run_stamp(run_id)


def take_pre_rollback_snapshot(rds: Any, plan: DatabaseRollbackPlan) -> dict:
    """Snapshot the live instance (once per run)."""
    existing = describe_snapshot(rds, plan.pre_rollback_snapshot)
    if existing is None:
        existing = rds.create_db_snapshot(
            DBSnapshotIdentifier=plan.pre_rollback_snapshot,
            DBInstanceIdentifier=plan.instance,
            Tags=[
                {"Key": "bisman:purpose", "Value": "pre-rollback"},
                {"Key": "bisman:rollback-target", "Value": plan.target},
            ],
        )["DBSnapshot"]
    return {"snapshot": plan.pre_rollback_snapshot, "of": plan.instance, "status": existing.get("Status", "")}


def snapshot_poke(state: str | None, identifier: str) -> Poke:
    """One look at a snapshot's state (``clients.rds.snapshot_state``)."""
    if state is None or state in SNAPSHOT_TERMINAL:
        raise CheckFailed(
            f"snapshot {identifier}",
            state or "does not exist",
            "available",
            "check the RDS console's events; nothing was restored yet",
        )
    return Poke(
        state == "available",
        {"snapshot": identifier, "status": state},
        f"snapshot {identifier} to become available (now {state})",
    )


def instance_poke(state: str | None, identifier: str) -> Poke:
    """One look at the restored instance's state (``clients.rds.instance_state``)."""
    if state is None or state in INSTANCE_TERMINAL:
        raise CheckFailed(
            f"restored instance {identifier}",
            state or "does not exist",
            "available",
            "check the RDS console's events; the original instance is untouched",
        )
    return Poke(
        state == "available",
        {"instance": identifier, "status": state},
        f"{identifier} to become available (now {state})",
    )


def restore(rds: Any, plan: DatabaseRollbackPlan, run_id: str) -> dict:
    """Restore the snapshot into the new instance (once per run)."""
    existing = describe_instance(rds, plan.target)
    if existing is not None:
        if not _restored_by_us(existing, run_id):
            raise CheckFailed(
                f"target {plan.target}",
                "appeared since the checks, not restored by this run",
                "absent or ours",
                "nothing was restored; trigger again with another target name",
            )
        return {"restored": plan.target, "status": existing.get("DBInstanceStatus", ""), "again": True}
    kwargs: dict[str, Any] = {
        "DBInstanceIdentifier": plan.target,
        "DBSnapshotIdentifier": plan.snapshot,
        "DBInstanceClass": plan.instance_class,
        "VpcSecurityGroupIds": plan.security_group_ids,
        "MultiAZ": plan.multi_az,
        "PubliclyAccessible": False,
        "CopyTagsToSnapshot": True,
        "Port": plan.port,
        "Tags": [
            {"Key": "bisman:restored-from", "Value": plan.snapshot},
            {"Key": "bisman:rollback-of", "Value": plan.instance},
            {"Key": "bisman:rollback-run", "Value": run_stamp(run_id)},
            {"Key": "Environment", "Value": plan.environment},
        ],
    }
    if plan.subnet_group:
        kwargs["DBSubnetGroupName"] = plan.subnet_group
    if plan.parameter_group:
        kwargs["DBParameterGroupName"] = plan.parameter_group
    if plan.storage_type:
        kwargs["StorageType"] = plan.storage_type
    status = rds.restore_db_instance_from_db_snapshot(**kwargs)["DBInstance"].get("DBInstanceStatus", "")
    return {"restored": f"{plan.snapshot} -> {plan.target}", "status": status}


def restored_settings(rds: Any, plan: DatabaseRollbackPlan) -> list[list[str]]:
    """Rows [setting, original, restored]: the restore copied the original's settings."""
    inst = describe_instance(rds, plan.target) or {}
    got = {
        "class": inst.get("DBInstanceClass"),
        "subnet group": (inst.get("DBSubnetGroup") or {}).get("DBSubnetGroupName"),
        "security groups": ",".join(
            sorted(g["VpcSecurityGroupId"] for g in inst.get("VpcSecurityGroups", []))
        ),
        "parameter group": next((g["DBParameterGroupName"] for g in inst.get("DBParameterGroups", [])), None),
    }
    want = {
        "class": plan.instance_class,
        "subnet group": plan.subnet_group,
        "security groups": ",".join(sorted(plan.security_group_ids)),
        "parameter group": plan.parameter_group,
    }
    rows = [[k, str(want[k]), str(got[k])] for k in want]
    wrong = [r[0] for r in rows if r[1] != r[2]]
    if wrong:
        raise CheckFailed(
            f"settings of {plan.target}",
            f"differs in {', '.join(wrong)}",
            f"the settings of {plan.instance}",
            "fix it with modify-db-instance before switching",
        )
    return rows


def verify_restored(conn: Any, where: str) -> dict:
    """SQL answers on the restored database and every application table is there."""
    query = (SQL_DIR / "application_tables.sql").read_text()
    conn.execute("SET statement_timeout = '15s'")
    found = {r[0] for r in conn.execute(query, {"tables": list(APPLICATION_TABLES)}).fetchall()}
    missing = [t for t in APPLICATION_TABLES if t not in found]
    if missing:
        raise CheckFailed(
            f"restored database at {where}",
            f"lacks tables {', '.join(missing)}",
            "every application table",
            "do not switch traffic to it",
        )
    tenants = conn.execute("SELECT count(*) FROM tenants").fetchone()[0]
    return {"answers at": where, "application tables": len(found), "tenants": tenants}


# -- switching traffic through PgBouncer --------------------------------------------------------------

_DB_LINE = re.compile(r"^(?P<name>[A-Za-z0-9_.-]+)\s*=\s*(?P<spec>.*?)\s*$")


def repoint_pgbouncer_ini(text: str, database: str, host: str, port: int) -> tuple[str, str]:
    """``text`` with the ``[databases]`` entry ``database`` pointed at host:port; returns (new text,
    previous spec). PgBouncer reads ``;`` and ``#`` as comments only at the start of a line (a
    trailing one breaks the connection string on RELOAD), so what the switch did goes on a comment
    line of its own above the entry."""
    out, section, previous = [], "", None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            section = stripped[1:-1].strip().lower()
        elif (
            section == "databases"
            and not stripped.startswith((";", "#"))
            and (m := _DB_LINE.match(stripped))
            and m["name"] == database
        ):
            previous = m["spec"]
            spec = re.sub(r"\bhost=\S+", f"host={host}", previous)
            spec = re.sub(r"\bport=\S+", f"port={port}", spec)
            spec += "" if "host=" in spec else f" host={host}"
            spec += "" if "port=" in spec else f" port={port}"
            out.append(f"; {database} was: {previous}")
            line = f"{database} = {spec}"
        out.append(line)
    if previous is None:
        raise CheckFailed(
            "PgBouncer's [databases]",
            f"no entry {database!r}",
            f"an entry {database}",
            "nothing was switched; check PgBouncer's configuration",
        )
    return "\n".join(out) + "\n", previous


def replica_endpoints(rds: Any, endpoints: Any, instance: str) -> dict[str, tuple[str, int]]:
    """``{replica: (host, port)}`` for every read replica of ``instance``: where the abandoned
    lineage serves reads. ``endpoints`` is the configured ``DatabaseEndpoints``."""
    found = describe_instance(rds, instance) or {}
    return {r: endpoints.endpoint(rds, r) for r in found.get("ReadReplicaDBInstanceIdentifiers") or []}


def _same_place(entry: dict, host: str, port: int) -> bool:
    listed = entry.get("host")
    if not listed or int(entry.get("port") or 0) != int(port):
        return False
    return listed == host or bool(_addresses(listed) & _addresses(host))


def pools_on(admin: Any, places: dict[str, tuple[str, int]], exclude: str) -> dict[str, str]:
    """``{pool: instance}``: PgBouncer's pools (``SHOW DATABASES``) served from one of ``places``
    (``{instance: (host, port)}``), ``exclude`` left out."""
    from bisman_ops.clients import pgbouncer

    found = {}
    for entry in pgbouncer.show(admin, "DATABASES"):
        for instance, (host, port) in places.items():
            if entry["name"] != exclude and _same_place(entry, host, port):
                found[entry["name"]] = instance
    return found


def switch_pgbouncer(
    admin_conn_id: str,
    pgb_config: Any,
    database: str,
    host: str,
    port: int,
    pause_timeout_s: float,
    replicas: dict[str, tuple[str, int]] | None = None,
) -> dict:
    """Repoint PgBouncer's pool ``database`` at host:port: rewrite the entry, PAUSE (bounded: see
    ``clients.pgbouncer.pause``), RELOAD, RECONNECT, RESUME. RESUME also runs as a teardown task,
    so a worker that dies in between does not leave the application paused.

    Every other pool served by one of ``replicas`` (``replica_endpoints`` of the original: its
    read-only pools) is repointed at host:port in the same rewrite and RECONNECTed (reads need no
    PAUSE), so reads follow the restored primary instead of the abandoned lineage."""
    from bisman_ops.clients import pgbouncer

    pgbouncer.plain(database)
    with pgbouncer.connect(admin_conn_id) as admin:
        followers = pools_on(admin, replicas or {}, exclude=database)
    before = pgb_config.read()
    new_text, previous = repoint_pgbouncer_ini(before, database, host, port)
    followed = {}
    for pool in sorted(followers):
        new_text, followed[pgbouncer.plain(pool)] = repoint_pgbouncer_ini(new_text, pool, host, port)
    try:
        waited = pgbouncer.pause(admin_conn_id, database, pause_timeout_s)
    except pgbouncer.PauseTimedOut as exc:
        raise CheckFailed(
            f"PAUSE {database}",
            str(exc),
            f"paused within {pause_timeout_s:g} s",
            "a long transaction holds the pool; PgBouncer was resumed and still points at the "
            "original. Clear this task when the long job is done",
        ) from None
    from bisman_ops.change import failpoints

    failpoints.reached("paused")  # a drill of the worker dying here: the teardown must RESUME
    with pgbouncer.connect(admin_conn_id) as admin:
        try:
            pgb_config.write(new_text)
            pgbouncer.command(admin, "RELOAD")
            pgbouncer.command(admin, "RECONNECT", database)
            for pool in followed:
                pgbouncer.command(admin, "RECONNECT", pool)
        finally:
            pgbouncer.resume_if_paused(admin, database)
    return {
        "pgbouncer database": database,
        "before": previous,
        "after": f"host={host} port={port}",
        "read-only pools moved": {
            pool: f"{was} (on {followers[pool]}) -> host={host} port={port}" for pool, was in followed.items()
        },
        "paused seconds": round(waited, 2),
        "configuration": pgb_config.where,
    }


def resume_pgbouncer(admin_conn_id: str, database: str) -> dict:
    """Teardown: RESUME the pool if it is still paused (by a switch that did not finish)."""
    from bisman_ops.clients import pgbouncer

    with pgbouncer.connect(admin_conn_id) as admin:
        return {"resumed": pgbouncer.resume_if_paused(admin, database)}


def _addresses(host: str) -> set[str]:
    try:
        return {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return {host}


def verify_switch(admin: Any, app: Any, database: str, host: str, port: int) -> dict:
    """PgBouncer serves the restored instance: ``SHOW DATABASES`` lists host and port of the target,
    and a query through PgBouncer's pool answers from a server at that address and port."""
    from bisman_ops.clients import pgbouncer

    entry = pgbouncer.database_entry(admin, database) or {}
    listed = f"{entry.get('host')}:{entry.get('port')}"
    server_addr, server_port = app.execute("SELECT host(inet_server_addr()), inet_server_port()").fetchone()
    seen = {"SHOW DATABASES": listed, "query answered by": f"{server_addr}:{server_port}"}
    if entry.get("host") != host or int(entry.get("port") or 0) != port:
        raise CheckFailed(
            f"PgBouncer's {database} after RELOAD",
            listed,
            f"{host}:{port}",
            "PgBouncer did not take the new entry (see its log: a RELOAD with a broken line keeps "
            "the old one); the application still uses the original",
            seen,
        )
    if int(server_port) != port or (server_addr not in _addresses(host) and server_addr != host):
        raise CheckFailed(
            f"a query through PgBouncer's {database}",
            f"{server_addr}:{server_port}",
            f"the restored instance at {host}:{port}",
            "PgBouncer still hands out connections to the original: RECONNECT the pool, then clear this task",
            seen,
        )
    return seen


def verify_followers(
    admin: Any, connect: Any, database: str, host: str, port: int, replicas: dict[str, tuple[str, int]]
) -> dict:
    """No PgBouncer pool is still served by a replica of the original (``replicas``), and a query
    through each pool that follows the restored instance (on host:port, ``database`` apart) answers
    there. ``connect(pool)`` opens a connection through PgBouncer to that pool."""
    left = pools_on(admin, replicas, exclude=database)
    if left:
        listed = ", ".join(f"{pool} on {instance}" for pool, instance in sorted(left.items()))
        raise CheckFailed(
            "PgBouncer's read-only pools after the switch",
            f"{listed} (a replica of the abandoned instance)",
            f"every pool on the restored instance at {host}:{port}",
            "reads would serve the old lineage while writes go to the restored instance: repoint "
            "those pools at the restored instance in PgBouncer's configuration, RELOAD, RECONNECT "
            "them, then clear this task",
            {"left on the old lineage": left},
        )
    answered = {}
    for pool in sorted(pools_on(admin, {"restored": (host, port)}, exclude=database)):
        with connect(pool) as conn:
            addr, server_port = conn.execute("SELECT host(inet_server_addr()), inet_server_port()").fetchone()
        answered[pool] = f"{addr}:{server_port}"
        if int(server_port) != port or (addr not in _addresses(host) and addr != host):
            raise CheckFailed(
                f"a query through PgBouncer's {pool}",
                f"{addr}:{server_port}",
                f"the restored instance at {host}:{port}",
                f"PgBouncer still hands out {pool} connections to the old server: RECONNECT {pool}, "
                "then clear this task",
                {"read-only pools answered by": answered},
            )
    return {"read-only pools answered by": answered}
