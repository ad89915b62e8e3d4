"""Phase 2, read replica: lag (CloudWatch ``ReplicaLag`` and SQL after a write on the primary),
routing of reads and writes verified from the log and database side, and the replica-failure drill.

RDS cannot stop a read replica (CONTRACT.md), so the drill reboots it through the RDS API
(``RdsRebootControl``). How the replica is taken down is a small interface (``ReplicaControl``):
a deployment where a reboot is not enough (the local sandbox, whose replica is a local PostgreSQL)
registers its own implementation through ``bisman_ops.extension`` (``BISMAN_IMPL_REPLICA_CONTROL``
naming ``package.module:Class``); the product never knows which.

The checks take plain values and connections; the tasks at the end are the DAG's ``read_replica``
group, fed the validated settings and the Terraform outputs.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from bisman_ops import config
from bisman_ops.change.errors import CheckFailed, fail_unless
from bisman_ops.change.phase import Phase, phase
from bisman_ops.change.step import Poke, Result, step
from bisman_ops.rollout.settings import RolloutSettings

HTTP_TIMEOUT_S = 15
CLOUDWATCH_WINDOW_S = 300
CLOUDWATCH_FRESH_S = 120  # an older datapoint says nothing about the lag now
LOG_WAIT_S = 20.0
RESTORE_TIMEOUT_S = 600
RESTORE_POLL_S = 10
CONTROL_EXTENSION = "replica_control"


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


def sql_replica_lag(primary_conn_id: str, replica_conn_id: str, wait_s: float) -> dict[str, Any]:
    """Commit a WAL message on the primary, then time until the replica has replayed it.

    ``value`` is that time in seconds (``wait_s`` or more when not replayed yet), None when the
    replica cannot be reached.
    """
    import psycopg

    from bisman_ops.clients import postgres

    try:
        with postgres.connect(primary_conn_id, autocommit=True, application_name="bisman-rollout-lag") as p:
            with p.transaction():
                # Transactional, so the commit is flushed at once (a bare xid would commit lazily).
                p.execute("SELECT pg_logical_emit_message(true, 'bisman_rollout_lag_probe', '')")
            written_at = time.monotonic()
            lsn = p.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0]
    except psycopg.Error as exc:
        raise CheckFailed("the primary for the lag probe", f"unreachable ({type(exc).__name__})",
                          "a connection",
                          f"Check the {primary_conn_id} connection, then clear this task") from None
    try:
        with postgres.connect(replica_conn_id, autocommit=True, application_name="bisman-rollout-lag") as r:
            while True:
                replayed = r.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,)).fetchone()[0]
                elapsed = time.monotonic() - written_at
                if replayed or elapsed >= wait_s:
                    return {"value": round(elapsed, 3), "replayed": bool(replayed)}
                time.sleep(0.01)
    except psycopg.Error as exc:
        return {"value": None, "replayed": False, "error": type(exc).__name__}


def lag_verdict(replica_id: str, threshold_s: float, cloudwatch: dict[str, Any],
                sql: dict[str, Any] | None) -> Poke:
    """Done when CloudWatch's fresh ReplicaLag and (when measured) the SQL replay lag are both under
    ``threshold_s``; otherwise what is still wrong."""
    sql = sql if sql is not None else {"value": None, "unmeasured": True}
    measured = {
        "replica": replica_id,
        "threshold_s": threshold_s,
        "cloudwatch_replica_lag_s": cloudwatch["value"],
        "cloudwatch_datapoint_age_s": cloudwatch["age_s"],
        "sql_replay_lag_s": sql["value"],
    }
    reasons = []
    if cloudwatch["value"] is None or cloudwatch["age_s"] is None or cloudwatch["age_s"] > CLOUDWATCH_FRESH_S:
        reasons.append(f"no fresh CloudWatch ReplicaLag datapoint (latest age {cloudwatch['age_s']} s)")
    elif cloudwatch["value"] >= threshold_s:
        reasons.append(f"CloudWatch ReplicaLag {cloudwatch['value']:.2f} s >= {threshold_s} s")
    if sql["value"] is not None and sql["value"] >= threshold_s:
        reasons.append(f"SQL replay lag {sql['value']:.2f} s >= {threshold_s} s")
    elif sql["value"] is None and not sql.get("unmeasured"):
        reasons.append(f"replica unreachable by SQL ({sql.get('error', 'no answer')})")
    if not reasons:
        return Poke(True, measured)
    return Poke(False, measured,
                f"replica lag not under {threshold_s} s ({replica_id}): " + "; ".join(reasons))


def lag_poke(cloudwatch: Any, replica_id: str, threshold_s: float) -> Poke:
    cw = cloudwatch_replica_lag(cloudwatch, replica_id)
    sql = sql_replica_lag(config.APP_DB_PRIMARY_CONN_ID, config.APP_DB_REPLICA_CONN_ID,
                          wait_s=max(threshold_s * 2, 1.0))
    return lag_verdict(replica_id, threshold_s, cw, sql)


# -- routing --------------------------------------------------------------------------------------


def _request_id(kind: str) -> str:
    return f"rollout-{kind}-{uuid.uuid4().hex[:16]}"


def find_route_log(logs: Any, log_group: str, route: str, request_id: str, since_ms: int,
                   wait_s: float | None = None) -> str | None:
    """The application's CloudWatch Logs line for ``request_id`` with ``db_route=<route>``, or None
    after ``wait_s`` (default ``LOG_WAIT_S``)."""
    deadline = time.monotonic() + (LOG_WAIT_S if wait_s is None else wait_s)
    while True:
        kwargs: dict[str, Any] = {"logGroupName": log_group, "filterPattern": f'"db_route={route}"',
                                  "startTime": since_ms}
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


def probe_tenant_id(primary: Any) -> int:
    row = primary.execute("SELECT id FROM tenants ORDER BY id LIMIT 1").fetchone()
    if row is None:
        raise CheckFailed("a tenant to probe routing with", "none in the database", "at least one tenant",
                          "Create one, then clear this task")
    return int(row[0])


def routing_problems(measured: dict[str, Any], log_group: str) -> list[str]:
    """What a routing probe got wrong: the read not logged as served by the replica, the write not
    logged as a primary write, or the write's ``updated_at`` not on the primary."""
    problems = []
    if measured["read_status"] != 200 or measured["write_status"] != 200:
        return [f"read answered {measured['read_status']}, write answered {measured['write_status']}"]
    if not measured.get("read_log_line"):
        problems.append(f"no 'db_route=replica' line for request {measured['read_request_id']} in "
                        f"{log_group} (the application answered route={measured.get('read_route')!r})")
    if not measured.get("write_log_line"):
        problems.append(f"no 'db_route=primary-write' line for request {measured['write_request_id']} "
                        f"in {log_group}")
    if not measured.get("write_seen_on_primary"):
        problems.append(f"the write's updated_at {measured.get('written_updated_at')} is not on the primary "
                        f"({measured.get('primary_updated_at')})")
    return problems


def _routing_probe(http: Any, admin_token: str, logs: Any, log_group: str, tenant_id: int,
                   primary: Any) -> dict[str, Any]:
    since_ms = int(time.time() * 1000) - 5000
    auth = {"Authorization": f"Bearer {admin_token}"}
    read_id, write_id = _request_id("read"), _request_id("write")
    read = http("GET", f"/api/admin/tenants/{tenant_id}/usage", headers={**auth, "X-Request-Id": read_id})
    write = http("POST", f"/api/admin/tenants/{tenant_id}/touch", headers={**auth, "X-Request-Id": write_id})
    measured: dict[str, Any] = {"tenant_id": tenant_id, "read_status": read.status_code,
                                "write_status": write.status_code, "read_request_id": read_id,
                                "write_request_id": write_id}
    if read.status_code != 200 or write.status_code != 200:
        return measured
    measured["read_route"] = read.json().get("route")
    measured["read_log_line"] = find_route_log(logs, log_group, "replica", read_id, since_ms, LOG_WAIT_S / 2)
    measured["write_log_line"] = find_route_log(logs, log_group, "primary-write", write_id, since_ms,
                                                LOG_WAIT_S / 2)
    on_primary = primary.execute("SELECT updated_at FROM tenants WHERE id = %s", (tenant_id,)).fetchone()[0]
    written = datetime.fromisoformat(write.json()["updated_at"])
    measured["written_updated_at"] = written.isoformat()
    measured["primary_updated_at"] = on_primary.isoformat() if on_primary else None
    measured["write_seen_on_primary"] = on_primary == written
    return measured


def verify_routing(http: Any, admin_token: str, logs: Any, log_group: str, tenant_id: int, primary: Any,
                   attempts: int = 3) -> dict[str, Any]:
    """A read through the application is logged as served by the replica; a write is logged as a
    primary write and its new ``updated_at`` is on the primary. ``http(method, path, headers=)``
    calls the application.

    The application ships its log lines on a best-effort basis, so a probe whose lines never
    arrive is repeated (up to ``attempts`` probes) before the check fails.
    """
    measured: dict[str, Any] = {}
    problems: list[str] = []
    for attempt in range(1, attempts + 1):
        measured = _routing_probe(http, admin_token, logs, log_group, tenant_id, primary)
        measured["attempt"] = attempt
        problems = routing_problems(measured, log_group)
        if not problems:
            return measured
    fail_unless(problems, f"read/write routing after {attempts} probes",
                "reads logged db_route=replica, writes db_route=primary-write and on the primary",
                "Check DATABASE_URL_REPLICA in the application's settings and its logs, then clear this task",
                measured)
    return measured


def fallback_problems(measured: dict[str, Any], log_group: str) -> list[str]:
    problems = []
    if measured["read_status"] != 200:
        problems.append(f"the read answered {measured['read_status']} with the replica down")
    elif not measured.get("fallback_log_line"):
        problems.append(f"no 'db_route=fallback' line for request {measured['read_request_id']} in "
                        f"{log_group} (the application answered route={measured.get('read_route')!r})")
    if measured["health_status"] != 200:
        problems.append(f"GET /health answered {measured['health_status']} with the replica down")
    return problems


def verify_fallback(http: Any, admin_token: str, logs: Any, log_group: str, tenant_id: int) -> dict[str, Any]:
    """With the replica down: a read still answers 200, logged as ``fallback`` to the primary, and the
    application's health stays green."""
    since_ms = int(time.time() * 1000) - 5000
    read_id = _request_id("fallback")
    read = http("GET", f"/api/admin/tenants/{tenant_id}/usage",
                headers={"Authorization": f"Bearer {admin_token}", "X-Request-Id": read_id})
    health = http("GET", "/health", headers={})
    measured: dict[str, Any] = {"read_status": read.status_code, "health_status": health.status_code,
                                "read_request_id": read_id}
    if read.status_code == 200:
        body = read.json()
        measured.update({"read_route": body.get("route"), "served_by": body.get("served_by")})
        measured["fallback_log_line"] = find_route_log(logs, log_group, "fallback", read_id, since_ms)
    fail_unless(fallback_problems(measured, log_group), "reads with the replica down",
                "answered from the primary (db_route=fallback) and health green",
                "Check the application's replica fallback; the replica_restored teardown restores "
                "the replica",
                measured)
    return measured


# -- replica control (the drill) ---------------------------------------------------------------------


class ReplicaControl(Protocol):
    """Takes the read replica down for the drill and brings it back. Constructed with an RDS client
    and the replica's identifier (Terraform output ``db_replica_identifier``)."""

    name: str

    def take_down(self) -> dict[str, Any]: ...

    def restore(self) -> dict[str, Any]: ...


@dataclass
class RdsRebootControl:
    """AWS: reboot the replica through the RDS API; restore waits (botocore's waiter) until it is
    available again."""

    rds: Any
    replica_id: str
    timeout_s: float = RESTORE_TIMEOUT_S
    name: str = "rds-reboot"

    def take_down(self) -> dict[str, Any]:
        status = self.rds.reboot_db_instance(DBInstanceIdentifier=self.replica_id)["DBInstance"][
            "DBInstanceStatus"]
        return {"control": self.name, "rebooted": self.replica_id, "status_after_reboot_call": status}

    def restore(self) -> dict[str, Any]:
        from botocore.exceptions import WaiterError

        try:
            self.rds.get_waiter("db_instance_available").wait(
                DBInstanceIdentifier=self.replica_id,
                WaiterConfig={"Delay": RESTORE_POLL_S,
                              "MaxAttempts": max(1, int(self.timeout_s // RESTORE_POLL_S))})
        except WaiterError as exc:
            raise CheckFailed(f"replica {self.replica_id} after its reboot", f"not available ({exc})",
                              f"available within {self.timeout_s:.0f} s",
                              "Check it in the RDS console") from None
        return {"control": self.name, "replica": self.replica_id, "status": "available"}


def replica_control(rds: Any, replica_id: str, environ: dict | None = None) -> ReplicaControl:
    """The configured ReplicaControl (``BISMAN_IMPL_REPLICA_CONTROL``), else the RDS reboot."""
    from bisman_ops import extension

    return extension.load(CONTROL_EXTENSION, RdsRebootControl, environ)(rds, replica_id)


# -- tasks: the DAG's read_replica group -----------------------------------------------------------


def aws(service: str) -> Any:
    from bisman_ops.clients import aws as aws_client

    return aws_client.client(service)


def app_call(method: str, path: str, headers: dict) -> Any:
    """The application's API through HttpHook; a write is tried once (it is not idempotent)."""
    from bisman_ops.clients import app_http

    return app_http.request(method, path, headers=headers, timeout=HTTP_TIMEOUT_S,
                            attempts=1 if method != "GET" else app_http.RETRY_ATTEMPTS)


def admin_token(outputs: dict[str, Any]) -> str:
    """A short-lived admin token signed with the application's JWT secret (never logged)."""
    from bisman_ops import app_tokens
    from bisman_ops.rollout import preflight

    secret = preflight.read_app_secret(aws("secretsmanager"), outputs["app_secrets_arn"])
    return app_tokens.mint(secret["JWT_SECRET"], role="admin", ttl=600, subject="bisman-rollout")


@step.sensor(poke_interval=timedelta(seconds=10), timeout_param="replica_lag_timeout_seconds")
def replica_lag_below_threshold(settings: dict, outputs: dict) -> Poke:
    s = RolloutSettings.from_dict(settings)
    return lag_poke(aws("cloudwatch"), outputs["db_replica_identifier"], s.replica_lag_threshold_s)


@step
def reads_on_replica_writes_on_primary(outputs: dict) -> Result:
    from bisman_ops.clients import postgres

    with postgres.connect(config.APP_DB_PRIMARY_CONN_ID, autocommit=True) as primary:
        tenant_id = probe_tenant_id(primary)
        measured = verify_routing(app_call, admin_token(outputs), aws("logs"), outputs["app_log_group"],
                                  tenant_id, primary)
    return Result(value={"tenant_id": tenant_id}, measured=measured)


@step.short_circuit
def failure_drill_enabled(settings: dict) -> bool:
    """The drill runs when the form (or, empty, the environment: staging) asks for it."""
    return bool(settings["replica_failure_drill"])


@step(changes=True)
def replica_taken_down(outputs: dict) -> dict:
    return replica_control(aws("rds"), outputs["db_replica_identifier"]).take_down()


@step
def reads_fall_back_to_primary(outputs: dict, routing: dict) -> dict:
    return verify_fallback(app_call, admin_token(outputs), aws("logs"), outputs["app_log_group"],
                           int(routing["tenant_id"]))


@step(lease=False, changes=True)
def replica_restored(outputs: dict) -> dict:
    """Teardown of the drill: runs whatever happened after the replica was taken down. Without the
    lease check: bringing the replica back is right even for a run that lost its lock."""
    return replica_control(aws("rds"), outputs["db_replica_identifier"]).restore()


@step.sensor(poke_interval=timedelta(seconds=10), timeout_param="replica_lag_timeout_seconds")
def replica_back_in_sync(settings: dict, outputs: dict) -> Poke:
    s = RolloutSettings.from_dict(settings)
    return lag_poke(aws("cloudwatch"), outputs["db_replica_identifier"], s.replica_lag_threshold_s)


@step(trigger_rule="none_failed_min_one_success")
def read_replica_gate(settings: dict) -> dict:
    return {"drill": settings["replica_failure_drill"], "passed": True}


@phase
def read_replica(settings: Any, outputs: Any) -> Phase:
    """Lag and routing; then the failure drill: the replica down, reads fall back to the primary,
    the replica restored whatever happened and back in sync."""
    from airflow.sdk import chain

    from bisman_ops.change.phase import intent, restore

    routing = reads_on_replica_writes_on_primary(outputs)
    drill = failure_drill_enabled(settings)
    intended = intent("take the read replica down, then restore it", task_id="replica_takedown_intended")
    taken_down = replica_taken_down(outputs)
    restored = restore(replica_restored(outputs), intent=intended, damage=taken_down)
    fallback = reads_fall_back_to_primary(outputs, routing)
    gate = read_replica_gate(settings)
    chain(replica_lag_below_threshold(settings, outputs), routing, drill, intended)
    chain(taken_down, fallback, restored, replica_back_in_sync(settings, outputs), gate)
    # Drill off: the short-circuit skips it all; the gate still follows the routing check.
    routing >> gate
    return Phase(gate=gate, restores=[restored])
