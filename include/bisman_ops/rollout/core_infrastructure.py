"""Phase 1, core infrastructure: the approval text for a Terraform plan, the plan file's identity,
and the verification that PgBouncer fronts the primary and pools the application's connections."""

from __future__ import annotations

import hashlib
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bisman_ops.rollout.gates import GateFailed, Poke, fail_unless

HTTP_TIMEOUT_S = 10
POOL_LOAD_CONCURRENCY = 24
POOL_LOAD_SECONDS = 4.0
POOL_SAMPLE_INTERVAL_S = 0.05


def plan_object_key(environment: str, run_id: str) -> str:
    """Where the run's plan file is kept in the state bucket: any worker can apply it later."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", run_id)
    return f"plans/{environment}/{safe}/tfplan"


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def approval_subject(environment: str, headline: str) -> str:
    return f"Apply the Terraform plan to {environment}? {headline}"[:250]


def approval_body(
    summary_markdown: str,
    *,
    environment: str,
    plan_sha256: str,
    plan_location: str,
    tfvars: dict[str, str],
    stateful_at_risk: bool,
) -> str:
    """What the approver sees. A destroy or replace of a database or Redis comes first."""
    lines = []
    if stateful_at_risk:
        lines += [
            "# ⚠ THIS PLAN DESTROYS OR REPLACES A DATABASE OR REDIS",
            "Reject unless a verified backup exists and the data loss is intended.",
            "",
        ]
    lines += [
        summary_markdown,
        "",
        "---",
        f"- **Environment:** {environment}",
        f"- **Plan file:** `{plan_location}`",
        f"- **Plan SHA-256:** `{plan_sha256}` (apply refuses any other file)",
        "",
        "| variable | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in tfvars.items()]
    lines += ["", "**Approve** applies exactly this plan. **Reject** stops the rollout; nothing is applied."]
    return "\n".join(lines)


# -- verification ---------------------------------------------------------------------------------


def rds_available_poke(rds: Any, identifier: str) -> Poke:
    try:
        db = rds.describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"][0]
    except Exception as exc:
        from bisman_ops.clients.aws import error_code

        code = error_code(exc)
        if code == "DBInstanceNotFound":
            raise GateFailed(
                f"RDS instance {identifier} (Terraform output db_instance_identifier) does not "
                "exist; check the apply's log",
                {"db_instance_identifier": identifier},
            ) from None
        raise
    status = db["DBInstanceStatus"]
    measured = {
        "db_instance_identifier": identifier,
        "status": status,
        "engine_version": db.get("EngineVersion"),
        "multi_az": db.get("MultiAZ"),
        "publicly_accessible": db.get("PubliclyAccessible"),
    }
    if status == "available":
        return Poke(True, measured)
    return Poke(False, measured, f"RDS instance {identifier} is {status!r}, not 'available'")


def pgbouncer_fronts_primary(admin_dsn: str, app_dsn: str, outputs: dict[str, Any]) -> dict[str, Any]:
    """PgBouncer's admin console answers, its database entry points at Terraform's primary, and a
    query through it lands on a server that is not in recovery (the primary)."""
    import psycopg

    from bisman_ops import pgbouncer_admin

    db_name = str(outputs["db_name"])
    try:
        databases = pgbouncer_admin.show(admin_dsn, "DATABASES")
    except psycopg.Error as exc:
        raise GateFailed(
            f"PgBouncer admin console unreachable ({type(exc).__name__}); check that PgBouncer "
            "runs and the bisman_pgbouncer_admin connection, then clear this task"
        ) from None
    entry = next((d for d in databases if d["name"] == db_name), None)
    if entry is None:
        raise GateFailed(
            f"PgBouncer has no database entry {db_name!r} (entries: "
            f"{', '.join(d['name'] for d in databases)}); fix its [databases] section",
            {"pgbouncer_databases": [d["name"] for d in databases]},
        )
    with psycopg.connect(app_dsn, autocommit=True, prepare_threshold=None) as conn:
        in_recovery, server_port, database = conn.execute(
            "SELECT pg_is_in_recovery(), inet_server_port(), current_database()"
        ).fetchone()
    servers = [s for s in pgbouncer_admin.show(admin_dsn, "SERVERS") if s["database"] == db_name]
    measured = {
        "pgbouncer_database": db_name,
        "pgbouncer_target": f"{entry['host']}:{entry['port']}",
        "terraform_primary": f"{outputs.get('db_primary_address')}:{outputs.get('db_port')}",
        "pool_size": entry.get("pool_size"),
        "pool_mode": entry.get("pool_mode"),
        "query_landed_on": "replica" if in_recovery else "primary",
        "server_port": server_port,
        "server_connections": len(servers),
    }
    problems = []
    if str(entry["port"]) != str(outputs.get("db_port")) or not _same_host(
        entry["host"], outputs.get("db_primary_address")
    ):
        problems.append(
            f"PgBouncer points {db_name} at {measured['pgbouncer_target']}, Terraform's primary "
            f"is {measured['terraform_primary']}"
        )
    if in_recovery:
        problems.append("a query through PgBouncer's read-write pool landed on a server in recovery")
    if database != db_name:
        problems.append(f"the query ran in database {database!r}, expected {db_name!r}")
    if not servers:
        problems.append(f"PgBouncer holds no server connection to {db_name} after a query")
    fail_unless(
        problems,
        "PgBouncer not connected to the primary",
        "Fix PgBouncer's configuration, reload it, then clear this task",
        measured,
    )
    return measured


def _same_host(a: Any, b: Any) -> bool:
    local = {"127.0.0.1", "localhost", "::1"}
    a, b = str(a or ""), str(b or "")
    return a == b or (a in local and b in local)


def app_health(base_url: str, timeout: float = HTTP_TIMEOUT_S) -> dict[str, Any]:
    """GET the application's health endpoints; all must answer 200."""
    from bisman_ops.app_api import probe_health

    results = probe_health(base_url, timeout=timeout)
    measured: dict[str, Any] = {r["path"]: r["status"] for r in results}
    problems = [f"GET {r['path']} answered {r['status']}: {r['body']}" for r in results if r["status"] != 200]
    fail_unless(
        problems,
        f"application at {base_url} not healthy",
        "Check the application's logs and its DATABASE_URL (PgBouncer), then clear this task",
        measured,
    )
    return measured


def measure_pooling(
    admin_dsn: str,
    base_url: str,
    db_name: str,
    *,
    primary_dsn: str | None = None,
    concurrency: int = POOL_LOAD_CONCURRENCY,
    seconds: float = POOL_LOAD_SECONDS,
) -> dict[str, Any]:
    """Load the application's database health endpoint from ``concurrency`` clients for ``seconds``
    while sampling PgBouncer's pool: pooled means the server connections stay within the pool size
    while the application holds more client connections than there are server connections."""
    import requests

    from bisman_ops import pgbouncer_admin

    pool_size = next(
        (int(d["pool_size"]) for d in pgbouncer_admin.show(admin_dsn, "DATABASES") if d["name"] == db_name),
        None,
    )
    if pool_size is None:
        raise GateFailed(f"PgBouncer has no database entry {db_name!r}; cannot measure pooling")
    stop = threading.Event()
    answered = {"ok": 0, "failed": 0}
    lock = threading.Lock()

    def load() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                try:
                    ok = session.get(f"{base_url.rstrip('/')}/api/health/db", timeout=HTTP_TIMEOUT_S).ok
                except requests.RequestException:
                    ok = False
                with lock:
                    answered["ok" if ok else "failed"] += 1

    peak_clients = peak_servers = samples = 0
    peak_backends = None
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for _ in range(concurrency):
            pool.submit(load)
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                for row in pgbouncer_admin.show(admin_dsn, "POOLS"):
                    if row["database"] != db_name:
                        continue
                    clients = int(row["cl_active"]) + int(row["cl_waiting"])
                    servers = sum(
                        int(row.get(k) or 0)
                        for k in ("sv_active", "sv_idle", "sv_used", "sv_tested", "sv_login")
                    )
                    peak_clients, peak_servers = max(peak_clients, clients), max(peak_servers, servers)
                samples += 1
                if primary_dsn and samples % 10 == 1:
                    peak_backends = max(peak_backends or 0, _backends(primary_dsn, db_name))
                time.sleep(POOL_SAMPLE_INTERVAL_S)
        finally:
            stop.set()
    measured = {
        "pool_size": pool_size,
        "peak_client_connections": peak_clients,
        "peak_server_connections": peak_servers,
        "load_clients": concurrency,
        "requests_ok": answered["ok"],
        "requests_failed": answered["failed"],
        "samples": samples,
        "pg_stat_activity_peak": peak_backends,
    }
    problems = []
    if peak_servers > pool_size:
        problems.append(f"{peak_servers} server connections exceed the pool size {pool_size}")
    if peak_clients <= peak_servers:
        problems.append(
            f"client connections ({peak_clients}) never exceeded server connections "
            f"({peak_servers}): pooling not shown"
        )
    if answered["ok"] == 0:
        problems.append("no request succeeded under load")
    fail_unless(
        problems,
        "connections not pooled",
        "Check PgBouncer's pool_mode and default_pool_size and that the application connects "
        "through PgBouncer, then clear this task",
        measured,
    )
    return measured


def _backends(primary_dsn: str, db_name: str) -> int:
    """The checklist's query: connections to the application database on the primary."""
    import psycopg

    with psycopg.connect(primary_dsn, autocommit=True, prepare_threshold=None) as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (db_name,)
        ).fetchone()[0]
