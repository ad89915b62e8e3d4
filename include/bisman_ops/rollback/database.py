"""Database rollback: restore an RDS snapshot into a NEW instance; the original is never deleted,
renamed or modified.

``plan_rollback`` checks the request (instance, snapshot, target name) and says how much data the
snapshot loses; ``take_pre_rollback_snapshot`` snapshots the live instance first so the rollback
itself can be undone; ``restore`` creates the new instance with the original's class, subnet group,
security groups and parameter group; ``instance_progress`` is the waiter's single look;
``verify_restored`` checks it answers SQL and has the application's tables; ``switch_secret`` and
``switch_pgbouncer`` point the application at it (only after a human approved).

In the sandbox the restored instance is a moto record with no server behind it: SQL checks and
PgBouncer go to ``BISMAN_ROLLBACK_DB_ENDPOINT_OVERRIDE`` (``host:port``, the sandbox's primary)
instead of the instance's RDS endpoint. Nothing else changes between sandbox and AWS.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bisman_ops.clients.aws import error_code
from bisman_ops.rollback import RollbackFailed, RollbackRefused, check_confirm, resource_names

ENDPOINT_OVERRIDE_ENV = "BISMAN_ROLLBACK_DB_ENDPOINT_OVERRIDE"
PGBOUNCER_INI_ENV = "BISMAN_PGBOUNCER_INI"
SQL_DIR = Path(__file__).with_name("sql")
APPLICATION_TABLES = (
    "tenants",
    "plan_quotas",
    "tenant_quotas",
    "client_daily_usage",
    "tenant_usage",
    "events",
)
# Statuses from which an instance does not become available without someone acting.
TERMINAL_STATUSES = (
    "failed",
    "incompatible-restore",
    "incompatible-parameters",
    "incompatible-network",
    "inaccessible-encryption-credentials",
    "storage-full",
    "deleting",
    "restore-error",
)
CONNECT_TIMEOUT_S = 5
MAX_ID = 63


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
    minutes = rest // 60
    parts = [f"{days} d"] if days else []
    parts += [f"{hours} h"] if hours or days else []
    parts.append(f"{minutes} min")
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
    live_address: str | None

    @property
    def data_loss(self) -> str:
        return (
            f"everything written after {self.snapshot_time} ({human_duration(self.data_loss_seconds)} "
            "before this check) is not in the restored instance"
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> DatabaseRollbackPlan:
        return cls(**d)


def plan_rollback(
    rds: Any,
    *,
    environment: str,
    db_instance_identifier: str | None,
    snapshot_identifier: str,
    target_instance_identifier: str | None,
    switch_traffic: bool,
    confirm: str | None,
    run_id: str,
    now: datetime | None = None,
    environ: dict | None = None,
) -> DatabaseRollbackPlan:
    """Check the request; raises RollbackRefused and changes nothing."""
    env = os.environ if environ is None else environ
    names = resource_names(environment, env)
    instance_id = db_instance_identifier or names.db_instance_identifier
    check_confirm(confirm, instance_id, "the DB instance identifier")
    instance = describe_instance(rds, instance_id)
    if instance is None:
        raise RollbackRefused(
            f"DB instance {instance_id!r} not found; check the environment and identifier. "
            "Nothing was changed."
        )
    if instance.get("ReadReplicaSourceDBInstanceIdentifier"):
        raise RollbackRefused(
            f"{instance_id} is a read replica; roll back its primary "
            f"{instance['ReadReplicaSourceDBInstanceIdentifier']}. Nothing was changed."
        )

    if snapshot_identifier == "latest":
        snapshot = latest_snapshot(rds, instance_id)
        if snapshot is None:
            raise RollbackRefused(
                f"no available snapshot of {instance_id}; name one explicitly. Nothing was changed."
            )
    else:
        snapshot = describe_snapshot(rds, snapshot_identifier)
        if snapshot is None:
            raise RollbackRefused(
                f"snapshot {snapshot_identifier!r} does not exist; list them with `aws rds "
                f"describe-db-snapshots --db-instance-identifier {instance_id}`. "
                "Nothing was changed."
            )
        if snapshot.get("DBInstanceIdentifier") != instance_id:
            raise RollbackRefused(
                f"snapshot {snapshot_identifier} belongs to instance "
                f"{snapshot.get('DBInstanceIdentifier')!r}, not {instance_id!r}. "
                "Nothing was changed."
            )
        if snapshot.get("Status") != "available":
            raise RollbackRefused(
                f"snapshot {snapshot_identifier} is {snapshot.get('Status')!r}, not "
                "'available'; wait until it is, then trigger again. Nothing was changed."
            )
    taken = snapshot["SnapshotCreateTime"]
    now = now or datetime.now(UTC)

    stamp = run_stamp(run_id)
    target = target_instance_identifier or f"{instance_id[: MAX_ID - 12]}-rb-{stamp}"
    if target.lower() == instance_id.lower():
        raise RollbackRefused(
            f"target_instance_identifier {target!r} is the live instance's name; a restore "
            "goes into a NEW instance (leave it empty to derive one). Nothing was changed."
        )
    existing = describe_instance(rds, target)
    if existing is not None and not _restored_by_us(existing, run_id):
        raise RollbackRefused(
            f"target_instance_identifier {target!r} already exists "
            f"({existing.get('DBInstanceStatus')}); choose a new name. Nothing was changed."
        )
    pre_snapshot = f"{instance_id[: MAX_ID - 22]}-pre-rollback-{stamp}"

    if switch_traffic and not env.get(PGBOUNCER_INI_ENV):
        raise RollbackRefused(
            f"switch_traffic needs PgBouncer's configuration ({PGBOUNCER_INI_ENV} is not set "
            "for this Airflow); restore without switching, then repoint PgBouncer by its "
            "deployment. Nothing was changed."
        )
    endpoint = instance.get("Endpoint") or {}
    return DatabaseRollbackPlan(
        environment=environment,
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
        live_address=endpoint.get("Address"),
    )


def _restored_by_us(instance: dict, run_id: str) -> bool:
    tags = {t["Key"]: t["Value"] for t in instance.get("TagList", [])}
    return tags.get("bisman:rollback-run") == run_stamp(run_id)


def take_pre_rollback_snapshot(rds: Any, plan: DatabaseRollbackPlan) -> str:
    """Snapshot the live instance (once per run); returns its status."""
    existing = describe_snapshot(rds, plan.pre_rollback_snapshot)
    if existing is not None:
        return existing.get("Status", "")
    created = rds.create_db_snapshot(
        DBSnapshotIdentifier=plan.pre_rollback_snapshot,
        DBInstanceIdentifier=plan.instance,
        Tags=[
            {"Key": "bisman:purpose", "Value": "pre-rollback"},
            {"Key": "bisman:rollback-target", "Value": plan.target},
        ],
    )["DBSnapshot"]
    return created.get("Status", "")


def snapshot_progress(rds: Any, identifier: str) -> tuple[bool, bool, str]:
    """(available, failed, detail) of a snapshot."""
    snap = describe_snapshot(rds, identifier)
    if snap is None:
        return False, True, f"snapshot {identifier} disappeared"
    status = snap.get("Status", "")
    return (
        status == "available",
        status in ("failed", "deleted", "error"),
        f"snapshot {identifier} {status} ({snap.get('PercentProgress', '?')}%)",
    )


def restore(rds: Any, plan: DatabaseRollbackPlan, run_id: str) -> str:
    """Restore the snapshot into the new instance (once per run); returns its status."""
    existing = describe_instance(rds, plan.target)
    if existing is not None:
        if not _restored_by_us(existing, run_id):
            raise RollbackFailed(
                f"{plan.target} appeared since the checks and was not restored by this run; "
                "nothing was restored. Trigger again with another target name."
            )
        return existing.get("DBInstanceStatus", "")
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
        ],
    }
    if plan.subnet_group:
        kwargs["DBSubnetGroupName"] = plan.subnet_group
    if plan.parameter_group:
        kwargs["DBParameterGroupName"] = plan.parameter_group
    if plan.storage_type:
        kwargs["StorageType"] = plan.storage_type
    return rds.restore_db_instance_from_db_snapshot(**kwargs)["DBInstance"].get("DBInstanceStatus", "")


def instance_progress(rds: Any, identifier: str) -> tuple[bool, bool, str]:
    """(available, failed, detail) of the restored instance."""
    inst = describe_instance(rds, identifier)
    if inst is None:
        return False, True, f"instance {identifier} does not exist (deleted?)"
    status = inst.get("DBInstanceStatus", "")
    return status == "available", status in TERMINAL_STATUSES, f"instance {identifier} is {status}"


def restored_settings(rds: Any, plan: DatabaseRollbackPlan) -> list[list[str]]:
    """Rows [setting, original, restored] to show that the restore copied the original's settings."""
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
        raise RollbackFailed(
            f"restored instance {plan.target} differs from {plan.instance} in: {', '.join(wrong)}; "
            "fix it with modify-db-instance before switching traffic"
        )
    return rows


def sql_endpoint(rds: Any, identifier: str, environ: dict | None = None) -> tuple[str, int, str]:
    """(host, port, how) where SQL reaches ``identifier``: its RDS endpoint, or the sandbox override."""
    env = os.environ if environ is None else environ
    override = env.get(ENDPOINT_OVERRIDE_ENV, "").strip()
    if override:
        host, _, port = override.rpartition(":")
        return host, int(port), f"{ENDPOINT_OVERRIDE_ENV} stands in for {identifier}'s endpoint"
    inst = describe_instance(rds, identifier) or {}
    endpoint = inst.get("Endpoint") or {}
    if not endpoint.get("Address"):
        raise RollbackFailed(f"instance {identifier} has no endpoint yet")
    return endpoint["Address"], int(endpoint.get("Port", 5432)), "the instance's RDS endpoint"


def verify_restored(host: str, port: int, dbname: str, user: str, password: str) -> dict:
    """Connect, run SQL and check every application table is there; returns what was seen."""
    import psycopg

    query = (SQL_DIR / "application_tables.sql").read_text()
    try:
        with psycopg.connect(
            host=host,
            port=port,
            dbname=dbname,
            user=user,
            password=password,
            connect_timeout=CONNECT_TIMEOUT_S,
            prepare_threshold=None,
        ) as conn:
            conn.execute("SET statement_timeout = '15s'")
            found = {r[0] for r in conn.execute(query, {"tables": list(APPLICATION_TABLES)}).fetchall()}
            tenants = (
                conn.execute("SELECT count(*) FROM tenants").fetchone()[0] if "tenants" in found else None
            )
    except psycopg.Error as exc:
        raise RollbackFailed(
            f"restored database at {host}:{port}/{dbname} does not answer SQL: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from None
    missing = [t for t in APPLICATION_TABLES if t not in found]
    if missing:
        raise RollbackFailed(
            f"restored database at {host}:{port}/{dbname} lacks application tables "
            f"{', '.join(missing)}; do not switch traffic to it"
        )
    return {"tables": len(found), "tenants": tenants}


# -- switching traffic -------------------------------------------------------------------------------


def _replace_host(url: str, host: str, port: int) -> str:
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@{host}:{port}" if userinfo else f"{host}:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


def _host_port(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 5432}"


def switch_secret(sm: Any, secret_id: str, plan: DatabaseRollbackPlan, new_address: str) -> dict:
    """Point the secret's DATABASE_URL at the restored instance when it names the live instance
    directly; a URL through PgBouncer stays (PgBouncer is switched instead). Returns what was done,
    hosts only (never the URL: it carries the password)."""
    import json

    value = json.loads(sm.get_secret_value(SecretId=secret_id)["SecretString"])
    url = value.get("DATABASE_URL")
    if not url:
        raise RollbackFailed(f"secret {secret_id} has no DATABASE_URL; nothing was switched")
    before = _host_port(url)
    if plan.live_address and urlsplit(url).hostname == plan.live_address:
        value["DATABASE_URL"] = _replace_host(url, new_address, plan.port)
        version = sm.put_secret_value(SecretId=secret_id, SecretString=json.dumps(value))["VersionId"]
        return {
            "DATABASE_URL host": f"{before} -> {new_address}:{plan.port}",
            "secret version": version,
            "undo": "the previous value is the secret's AWSPREVIOUS version",
        }
    if urlsplit(url).hostname == new_address:
        return {"DATABASE_URL host": f"{before} (already the restored instance)"}
    return {"DATABASE_URL host": f"{before} (PgBouncer; unchanged, PgBouncer is switched instead)"}


_DB_LINE = re.compile(r"^(?P<name>[A-Za-z0-9_.-]+)\s*=\s*(?P<spec>.*?)\s*(?P<comment>[;#].*)?$")


def repoint_pgbouncer_ini(text: str, database: str, host: str, port: int, note: str) -> tuple[str, str]:
    """``text`` with the ``[databases]`` entry ``database`` pointed at host:port; returns (new text,
    previous spec). Other entries and settings are kept as they are."""
    out, section, previous = [], "", None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            section = stripped[1:-1].strip().lower()
        elif section == "databases" and (m := _DB_LINE.match(stripped)) and m["name"] == database:
            previous = m["spec"]
            spec = re.sub(r"\bhost=\S+", f"host={host}", previous)
            spec = re.sub(r"\bport=\S+", f"port={port}", spec)
            spec += "" if "host=" in spec else f" host={host}"
            spec += "" if "port=" in spec else f" port={port}"
            line = f"{database} = {spec} ; {note}"
        out.append(line)
    if previous is None:
        raise RollbackFailed(f"PgBouncer has no [databases] entry {database!r}; nothing was switched")
    return "\n".join(out) + "\n", previous


def switch_pgbouncer(admin_dsn: str, ini_path: str, database: str, host: str, port: int, note: str) -> dict:
    """Repoint PgBouncer's pool: PAUSE (waits for running transactions), rewrite the entry, RELOAD,
    RECONNECT (new server connections go to the new host), RESUME. Clients queue, never fail."""
    import psycopg

    if not re.fullmatch(r"[A-Za-z0-9_]+", database):
        raise RollbackFailed(f"PgBouncer database name {database!r} is not a plain identifier")
    path = Path(ini_path)
    new_text, previous = repoint_pgbouncer_ini(path.read_text(), database, host, port, note)
    with psycopg.connect(
        admin_dsn, autocommit=True, prepare_threshold=None, connect_timeout=CONNECT_TIMEOUT_S
    ) as admin:
        admin.execute(f"PAUSE {database}")
        try:
            stat = path.stat()
            path.write_text(new_text)
            os.chown(path, stat.st_uid, stat.st_gid)
            admin.execute("RELOAD")
            admin.execute(f"RECONNECT {database}")
        finally:
            admin.execute(f"RESUME {database}")
        cur = admin.execute("SHOW DATABASES")
        columns = [c.name for c in cur.description or []]
        rows = [dict(zip(columns, r, strict=False)) for r in cur.fetchall()]
    now = next((r for r in rows if r.get("name") == database), None)
    return {
        "pgbouncer database": database,
        "before": previous,
        "after": f"host={host} port={port}",
        "pgbouncer now": f"{now['host']}:{now['port']}" if now else "(not listed)",
    }
