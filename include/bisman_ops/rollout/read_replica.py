"""Phase 2, read replica: lag (CloudWatch ``ReplicaLag`` and SQL after a write on the primary),
routing of reads and writes verified from the log and database side, and the replica-failure drill.

RDS cannot stop a read replica (CONTRACT.md), so the drill reboots it through the RDS API; in the
sandbox the ``SandboxReplicaControl`` also stops the local replica, which is what really makes
reads fall back. ``replica_control`` picks one from ``BISMAN_REPLICA_CONTROL`` (``rds`` or
``sandbox``; default ``sandbox`` when ``BISMAN_SANDBOX_DIR`` is set, else ``rds``).
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from bisman_ops.rollout.gates import GateFailed, Poke, fail_unless

HTTP_TIMEOUT_S = 15
CLOUDWATCH_WINDOW_S = 300
CLOUDWATCH_FRESH_S = 120  # an older datapoint says nothing about the lag now
SQL_PROBE_WAIT_S = 5.0
LOG_WAIT_S = 20.0
RESTORE_TIMEOUT_S = 600
CONTROL_ENV = "BISMAN_REPLICA_CONTROL"


# -- lag ------------------------------------------------------------------------------------------


def cloudwatch_replica_lag(cloudwatch: Any, replica_id: str, now: datetime | None = None) -> dict[str, Any]:
    """The latest ``AWS/RDS`` ``ReplicaLag`` datapoint of the last 5 minutes: value and age (s)."""
    now = now or datetime.now(UTC)
    stats = cloudwatch.get_metric_statistics(
        Namespace="AWS/RDS",
        MetricName="ReplicaLag",
        Dimensions=[{"Name": "DBInstanceIdentifier", "Value": replica_id}],
        StartTime=now - timedelta(seconds=CLOUDWATCH_WINDOW_S),
        EndTime=now + timedelta(seconds=60),
        Period=60,
        Statistics=["Maximum"],
    )
    points = sorted(stats.get("Datapoints", []), key=lambda d: d["Timestamp"])
    if not points:
        return {"value": None, "age_s": None}
    latest = points[-1]
    return {"value": float(latest["Maximum"]), "age_s": round((now - latest["Timestamp"]).total_seconds(), 1)}


def sql_replica_lag(primary_dsn: str, replica_dsn: str, wait_s: float = SQL_PROBE_WAIT_S) -> dict[str, Any]:
    """Commit a WAL message on the primary, then time until the replica has replayed it.

    ``value`` is that time in seconds (``wait_s`` or more when not replayed yet), None when the
    replica cannot be reached.
    """
    import psycopg

    try:
        with psycopg.connect(primary_dsn, autocommit=True, prepare_threshold=None) as primary:
            with primary.transaction():
                # Transactional, so the commit is flushed at once (a bare xid would commit lazily).
                primary.execute("SELECT pg_logical_emit_message(true, 'bisman_rollout_lag_probe', '')")
            written_at = time.monotonic()
            lsn = primary.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0]
    except psycopg.Error as exc:
        raise GateFailed(
            f"primary unreachable for the lag probe ({type(exc).__name__}); check the "
            "bisman_app_db_primary connection"
        ) from None
    try:
        with psycopg.connect(replica_dsn, autocommit=True, prepare_threshold=None) as replica:
            while True:
                replayed = replica.execute(
                    "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,)
                ).fetchone()[0]
                elapsed = time.monotonic() - written_at
                if replayed or elapsed >= wait_s:
                    return {"value": round(elapsed, 3), "replayed": bool(replayed)}
                time.sleep(0.01)
    except psycopg.Error as exc:
        return {"value": None, "replayed": False, "error": type(exc).__name__}


def lag_poke(
    cloudwatch: Any, replica_id: str, threshold_s: float, primary_dsn: str | None, replica_dsn: str | None
) -> Poke:
    """Pass when CloudWatch's fresh ReplicaLag and (when the replica is reachable) the SQL probe are
    both under ``threshold_s``."""
    cw = cloudwatch_replica_lag(cloudwatch, replica_id)
    sql = (
        sql_replica_lag(primary_dsn, replica_dsn, wait_s=max(threshold_s * 2, 1.0))
        if primary_dsn and replica_dsn
        else {"value": None}
    )
    measured = {
        "replica": replica_id,
        "threshold_s": threshold_s,
        "cloudwatch_replica_lag_s": cw["value"],
        "cloudwatch_datapoint_age_s": cw["age_s"],
        "sql_replay_lag_s": sql["value"],
    }
    reasons = []
    if cw["value"] is None or cw["age_s"] is None or cw["age_s"] > CLOUDWATCH_FRESH_S:
        reasons.append(f"no fresh CloudWatch ReplicaLag datapoint (latest age {cw['age_s']} s)")
    elif cw["value"] >= threshold_s:
        reasons.append(f"CloudWatch ReplicaLag {cw['value']:.2f} s >= {threshold_s} s")
    if sql["value"] is not None and sql["value"] >= threshold_s:
        reasons.append(f"SQL replay lag {sql['value']:.2f} s >= {threshold_s} s")
    elif sql["value"] is None and primary_dsn and replica_dsn:
        reasons.append(f"replica unreachable by SQL ({sql.get('error', 'no answer')})")
    if not reasons:
        return Poke(True, measured)
    return Poke(
        False, measured, f"replica lag not under {threshold_s} s ({replica_id}): " + "; ".join(reasons)
    )


# -- routing --------------------------------------------------------------------------------------


def _request_id(kind: str) -> str:
    return f"rollout-{kind}-{uuid.uuid4().hex[:16]}"


def find_route_log(
    logs: Any, log_group: str, route: str, request_id: str, since_ms: int, wait_s: float = LOG_WAIT_S
) -> str | None:
    """The application's CloudWatch Logs line for ``request_id`` with ``db_route=<route>``, or None."""
    deadline = time.monotonic() + wait_s
    while True:
        kwargs: dict[str, Any] = {
            "logGroupName": log_group,
            "filterPattern": f'"db_route={route}"',
            "startTime": since_ms,
        }
        while True:
            page = logs.filter_log_events(**kwargs)
            for event in page.get("events", []):
                message = event["message"]
                # moto's filter patterns are loose: check the line ourselves.
                if f"db_route={route} " in f"{message} " and f"request_id={request_id}" in message:
                    return message
            if not page.get("nextToken"):
                break
            kwargs["nextToken"] = page["nextToken"]
        if time.monotonic() >= deadline:
            return None
        time.sleep(1)


def probe_tenant_id(primary_dsn: str) -> int:
    import psycopg

    with psycopg.connect(primary_dsn, autocommit=True, prepare_threshold=None) as conn:
        row = conn.execute("SELECT id FROM tenants ORDER BY id LIMIT 1").fetchone()
    if row is None:
        raise GateFailed("no tenant in the database to probe routing with; create one, then clear this task")
    return int(row[0])


def verify_routing(
    base_url: str,
    admin_token: str,
    logs: Any,
    log_group: str,
    tenant_id: int,
    primary_dsn: str,
    attempts: int = 3,
) -> dict[str, Any]:
    """A read through the application is logged as served by the replica; a write is logged as a
    primary write and its new ``updated_at`` is on the primary.

    The application ships its log lines on a best-effort basis, so a probe whose lines never
    arrive is repeated (up to ``attempts`` probes) before the check fails.
    """
    measured: dict[str, Any] = {}
    problems: list[str] = []
    for attempt in range(1, attempts + 1):
        measured, problems = _routing_probe(base_url, admin_token, logs, log_group, tenant_id, primary_dsn)
        measured["attempt"] = attempt
        if not problems:
            return measured
    fail_unless(
        problems,
        f"read/write routing not verified after {attempts} probes",
        "Check DATABASE_URL_REPLICA in the application's settings and its logs, then clear this task",
        measured,
    )
    return measured


def _routing_probe(
    base_url: str, admin_token: str, logs: Any, log_group: str, tenant_id: int, primary_dsn: str
) -> tuple[dict[str, Any], list[str]]:
    import psycopg
    import requests

    since_ms = int(time.time() * 1000) - 5000
    headers = {"Authorization": f"Bearer {admin_token}"}
    read_id, write_id = _request_id("read"), _request_id("write")
    base = base_url.rstrip("/")
    read = requests.get(
        f"{base}/api/admin/tenants/{tenant_id}/usage",
        headers={**headers, "X-Request-Id": read_id},
        timeout=HTTP_TIMEOUT_S,
    )
    write = requests.post(
        f"{base}/api/admin/tenants/{tenant_id}/touch",
        headers={**headers, "X-Request-Id": write_id},
        timeout=HTTP_TIMEOUT_S,
    )
    measured: dict[str, Any] = {
        "tenant_id": tenant_id,
        "read_status": read.status_code,
        "write_status": write.status_code,
        "read_request_id": read_id,
        "write_request_id": write_id,
    }
    problems = []
    if read.status_code != 200 or write.status_code != 200:
        return measured, [f"read answered {read.status_code}, write answered {write.status_code}"]
    measured["read_route"] = read.json().get("route")
    read_line = find_route_log(logs, log_group, "replica", read_id, since_ms, wait_s=LOG_WAIT_S / 2)
    write_line = find_route_log(logs, log_group, "primary-write", write_id, since_ms, wait_s=LOG_WAIT_S / 2)
    measured["read_log_line"] = read_line
    measured["write_log_line"] = write_line
    if not read_line:
        problems.append(
            f"no 'db_route=replica' line for request {read_id} in {log_group} "
            f"(the application answered route={measured['read_route']!r})"
        )
    if not write_line:
        problems.append(f"no 'db_route=primary-write' line for request {write_id} in {log_group}")
    with psycopg.connect(primary_dsn, autocommit=True, prepare_threshold=None) as conn:
        on_primary = conn.execute("SELECT updated_at FROM tenants WHERE id = %s", (tenant_id,)).fetchone()[0]
    written = datetime.fromisoformat(write.json()["updated_at"])
    measured["write_seen_on_primary"] = on_primary == written
    if on_primary != written:
        problems.append(
            f"the write's updated_at {written.isoformat()} is not on the primary "
            f"({on_primary.isoformat() if on_primary else None})"
        )
    return measured, problems


def verify_fallback(
    base_url: str, admin_token: str, logs: Any, log_group: str, tenant_id: int
) -> dict[str, Any]:
    """With the replica down: a read still answers 200, logged as ``fallback`` to the primary, and the
    application's health stays green."""
    import requests

    since_ms = int(time.time() * 1000) - 5000
    read_id = _request_id("fallback")
    base = base_url.rstrip("/")
    read = requests.get(
        f"{base}/api/admin/tenants/{tenant_id}/usage",
        headers={"Authorization": f"Bearer {admin_token}", "X-Request-Id": read_id},
        timeout=HTTP_TIMEOUT_S,
    )
    health = requests.get(f"{base}/health", timeout=HTTP_TIMEOUT_S)
    measured: dict[str, Any] = {
        "read_status": read.status_code,
        "health_status": health.status_code,
        "read_request_id": read_id,
    }
    problems = []
    if read.status_code != 200:
        problems.append(f"the read answered {read.status_code} with the replica down")
    else:
        body = read.json()
        measured.update({"read_route": body.get("route"), "served_by": body.get("served_by")})
        line = find_route_log(logs, log_group, "fallback", read_id, since_ms)
        measured["fallback_log_line"] = line
        if not line:
            problems.append(
                f"no 'db_route=fallback' line for request {read_id} in {log_group} "
                f"(the application answered route={body.get('route')!r})"
            )
    if health.status_code != 200:
        problems.append(f"GET /health answered {health.status_code} with the replica down")
    fail_unless(
        problems,
        "reads did not fall back to the primary with the replica down",
        "Check the application's replica fallback; the replica is being restored by the "
        "replica_restored teardown",
        measured,
    )
    return measured


# -- replica control (the drill) ---------------------------------------------------------------------


class ReplicaControl(Protocol):
    name: str

    def take_down(self) -> dict[str, Any]: ...

    def restore(self) -> dict[str, Any]: ...


@dataclass
class RdsRebootControl:
    """Real AWS: reboot the replica through the RDS API; restore waits until it is available."""

    rds: Any
    replica_id: str
    timeout_s: float = RESTORE_TIMEOUT_S
    name: str = "rds-reboot"

    def take_down(self) -> dict[str, Any]:
        status = self.rds.reboot_db_instance(DBInstanceIdentifier=self.replica_id)["DBInstance"][
            "DBInstanceStatus"
        ]
        return {"control": self.name, "rebooted": self.replica_id, "status_after_reboot_call": status}

    def status(self) -> str:
        return self.rds.describe_db_instances(DBInstanceIdentifier=self.replica_id)["DBInstances"][0][
            "DBInstanceStatus"
        ]

    def restore(self) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout_s
        while (status := self.status()) != "available":
            if time.monotonic() >= deadline:
                raise GateFailed(
                    f"replica {self.replica_id} still {status!r} {self.timeout_s:.0f} s after its "
                    "reboot; check it in the RDS console",
                    {"status": status},
                )
            time.sleep(10)
        return {"control": self.name, "replica": self.replica_id, "status": status}


@dataclass
class SandboxReplicaControl(RdsRebootControl):
    """The sandbox: the RDS reboot in moto, plus stopping the local PostgreSQL replica for real."""

    name: str = "sandbox"

    def take_down(self) -> dict[str, Any]:
        from bisman_sandbox import postgres
        from bisman_sandbox.context import SandboxContext

        done = super().take_down()
        postgres.stop_replica(SandboxContext.from_env())
        return {**done, "control": self.name, "local_replica": "stopped"}

    def restore(self) -> dict[str, Any]:
        from bisman_sandbox import postgres
        from bisman_sandbox.context import SandboxContext

        postgres.start_replica(SandboxContext.from_env())  # returns once it streams again
        done = super().restore()
        return {**done, "control": self.name, "local_replica": "streaming"}


def replica_control(rds: Any, replica_id: str, environ: dict | None = None) -> ReplicaControl:
    env = os.environ if environ is None else environ
    kind = env.get(CONTROL_ENV) or ("sandbox" if env.get("BISMAN_SANDBOX_DIR") else "rds")
    if kind == "sandbox":
        return SandboxReplicaControl(rds, replica_id)
    if kind == "rds":
        return RdsRebootControl(rds, replica_id)
    raise ValueError(f"{CONTROL_ENV}={kind!r}; expected rds or sandbox")
