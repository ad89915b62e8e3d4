"""Phase 1, core infrastructure: Terraform plan, approval and apply (through the one Terraform
session), the outputs checked against CONTRACT.md, then the checks that the primary is available,
that PgBouncer fronts it, that the application is healthy through PgBouncer and that its
connections are pooled.

The checks take plain values and connections; the tasks at the end (the DAG's
``core_infrastructure`` group) pass the plan to the approval and the apply, and the Terraform
outputs to every later check.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from bisman_ops.change.errors import CheckFailed, fail_unless
from bisman_ops.change.phase import Phase, phase
from bisman_ops.change.report import Section
from bisman_ops.change.step import Poke, Result, context, step
from bisman_ops.rollout.settings import RolloutSettings

POOL_LOAD_CONCURRENCY = 24
POOL_LOAD_SECONDS = 4.0
POOL_SAMPLE_INTERVAL_S = 0.05
HEALTH_LOAD_PATH = "/api/health/db"
TERRAFORM_ENV_VARIABLE = "bisman_terraform_env"


# -- the approval's question ------------------------------------------------------------------------


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


def approval_question(planned: dict[str, Any], s: RolloutSettings) -> dict[str, str]:
    """What ``approve_plan`` asks, from the plan the session made."""
    return {
        "subject": approval_subject(s.environment, planned["headline"]),
        "body": approval_body(planned["markdown"], environment=s.environment,
                              plan_sha256=planned["plan_sha256"], plan_location=planned["plan_uri"],
                              tfvars=s.tfvars(),
                              stateful_at_risk=bool(planned["summary"].get("stateful_at_risk"))),
    }


def plan_section(planned: dict[str, Any]) -> Section:
    section = Section("Terraform plan")
    section.add("summary", planned["headline"]).add("has changes", planned["has_changes"])
    section.add("plan file", planned["plan_uri"]).add("plan SHA-256", planned["plan_sha256"])
    at_risk = planned["summary"].get("stateful_at_risk") or []
    if at_risk:
        section.add("stateful resources destroyed or replaced",
                    [f"{c['action']} {c['address']}" for c in at_risk])
    if not planned["has_changes"]:
        section.add("approval and apply", "skipped: the plan has no changes")
    return section


# -- verification -------------------------------------------------------------------------------------


def rds_available_poke(rds: Any, identifier: str) -> Poke:
    from bisman_ops.clients.aws import error_code

    try:
        db = rds.describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"][0]
    except Exception as exc:
        if error_code(exc) == "DBInstanceNotFound":
            raise CheckFailed(f"RDS instance {identifier} (Terraform output db_instance_identifier)",
                              "not found", "an instance", "Check the apply's log",
                              {"db_instance_identifier": identifier}) from None
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


def pgbouncer_fronts_primary(admin: Any, app: Any, outputs: dict[str, Any]) -> dict[str, Any]:
    """PgBouncer's database entry points at Terraform's primary (host and port as Terraform gives
    them), and a query through it (``app``: a connection through PgBouncer) lands on a server that
    is not in recovery (the primary), in the application's database. ``admin`` is a connection to
    PgBouncer's admin console."""
    from bisman_ops.clients import pgbouncer

    db_name = str(outputs["db_name"])
    databases = pgbouncer.show(admin, "DATABASES")
    entry = next((d for d in databases if d["name"] == db_name), None)
    if entry is None:
        raise CheckFailed(f"PgBouncer's [databases] entry for {db_name}", "none (entries: "
                          f"{', '.join(d['name'] for d in databases)})", f"an entry {db_name}",
                          "Fix PgBouncer's [databases] section, reload it, then clear this task",
                          {"pgbouncer_databases": [d["name"] for d in databases]})
    in_recovery, server_port, database = app.execute(
        "SELECT pg_is_in_recovery(), inet_server_port(), current_database()").fetchone()
    servers = [s for s in pgbouncer.show(admin, "SERVERS") if s["database"] == db_name]
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
    if measured["pgbouncer_target"] != measured["terraform_primary"]:
        problems.append(f"PgBouncer points {db_name} at {measured['pgbouncer_target']}, Terraform's primary "
                        f"is {measured['terraform_primary']}")
    if in_recovery:
        problems.append("a query through PgBouncer's read-write pool landed on a server in recovery")
    if database != db_name:
        problems.append(f"the query ran in database {database!r}, expected {db_name!r}")
    if not servers:
        problems.append(f"PgBouncer holds no server connection to {db_name} after a query")
    fail_unless(problems, "PgBouncer in front of the primary",
                "its entry on Terraform's primary and queries landing there",
                "Fix PgBouncer's configuration, reload it, then clear this task", measured)
    return measured


def app_health(results: list[dict], transactions_served: int | None, db_name: str) -> dict[str, Any]:
    """The health endpoints all answered 200 and PgBouncer served the application's transactions."""
    measured: dict[str, Any] = {r["path"]: r["status"] for r in results}
    measured["pgbouncer_transactions_served"] = transactions_served
    problems = [f"GET {r['path']} answered {r['status']}: {r['body']}" for r in results if r["status"] != 200]
    if not transactions_served:
        problems.append(f"PgBouncer has served no transaction for {db_name}: the application does not "
                        "connect through it")
    fail_unless(problems, "the application's health through PgBouncer",
                "every health endpoint 200 and transactions served by PgBouncer",
                "Check the application's logs and its DATABASE_URL (PgBouncer), then clear this task",
                measured)
    return measured


def pooling_verdict(measured: dict[str, Any]) -> dict[str, Any]:
    """Pooled: server connections within the pool size while the application held more client
    connections than there were server connections, and requests answered under load."""
    problems = []
    opened = measured.get("peak_server_connections_open", measured["peak_server_connections"])
    if opened > measured["pool_size"]:
        problems.append(f"{opened} server connections exceed the pool size "
                        f"{measured['pool_size']}")
    if measured["peak_client_connections"] <= measured["peak_server_connections"]:
        problems.append(f"client connections ({measured['peak_client_connections']}) never exceeded server "
                        f"connections ({measured['peak_server_connections']}): pooling not shown")
    if measured["requests_ok"] == 0:
        problems.append("no request succeeded under load")
    fail_unless(problems, "connection pooling under load", "clients > servers <= pool size",
                "Check PgBouncer's pool_mode and default_pool_size and that the application connects "
                "through PgBouncer, then clear this task", measured)
    return measured


def measure_pooling(admin_conn_id: str, db_name: str, *, primary_conn_id: str | None = None,
                    concurrency: int = POOL_LOAD_CONCURRENCY, seconds: float = POOL_LOAD_SECONDS,
                    load: Any = None) -> dict[str, Any]:
    """Load the application's database health endpoint from ``concurrency`` clients for ``seconds``
    while sampling PgBouncer's pools (and the checklist's ``pg_stat_activity`` count on the
    primary); ``load()`` makes one request and says whether it succeeded."""
    from bisman_ops.clients import pgbouncer, postgres

    if load is None:
        load = _health_load(HEALTH_LOAD_PATH)

    with pgbouncer.connect(admin_conn_id) as admin:
        entry = pgbouncer.database_entry(admin, db_name)
        if entry is None:
            raise CheckFailed(f"PgBouncer's [databases] entry for {db_name}", "none", f"an entry {db_name}",
                              "Fix PgBouncer's configuration, then clear this task")
        pool_size = int(entry["pool_size"])
        stop = threading.Event()
        answered = {"ok": 0, "failed": 0}
        guard = threading.Lock()

        def keep_loading() -> None:
            while not stop.is_set():
                ok = load()
                with guard:
                    answered["ok" if ok else "failed"] += 1

        peak_clients = peak_servers = peak_open = samples = 0
        peak_backends = None
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            for _ in range(concurrency):
                pool.submit(keep_loading)
            deadline = time.monotonic() + seconds
            try:
                while time.monotonic() < deadline:
                    for row in pgbouncer.show(admin, "POOLS"):
                        if row["database"] != db_name:
                            continue
                        clients = int(row["cl_active"]) + int(row["cl_waiting"])
                        # Servers busy serving clients: idle ones left open by earlier traffic say
                        # nothing about multiplexing, only about the pool's size.
                        servers = int(row.get("sv_active") or 0)
                        opened = sum(int(row.get(k) or 0)
                                     for k in ("sv_active", "sv_idle", "sv_used", "sv_tested", "sv_login"))
                        peak_clients, peak_servers = max(peak_clients, clients), max(peak_servers, servers)
                        peak_open = max(peak_open, opened)
                    samples += 1
                    if primary_conn_id and samples % 10 == 1:
                        with postgres.connect(primary_conn_id, autocommit=True) as primary:
                            backends = primary.execute(
                                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (db_name,)
                            ).fetchone()[0]
                        peak_backends = max(peak_backends or 0, backends)
                    time.sleep(POOL_SAMPLE_INTERVAL_S)
            finally:
                stop.set()
    return pooling_verdict({
        "pool_size": pool_size,
        "peak_client_connections": peak_clients,
        "peak_server_connections": peak_servers,
        "peak_server_connections_open": peak_open,
        "load_clients": concurrency,
        "requests_ok": answered["ok"],
        "requests_failed": answered["failed"],
        "samples": samples,
        "pg_stat_activity_peak": peak_backends,
    })


def _health_load(path: str):
    """One GET of the application's ``path`` per call, from a session per thread. The URL comes
    from the Airflow connection once, here, not from each load thread: a connection lookup inside
    a task may go through the task supervisor, which the threads must not share."""
    import requests

    from bisman_ops.clients import app_http

    url = f"{app_http.base_url()}{path}"
    local = threading.local()

    def load() -> bool:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        try:
            return session.get(url, timeout=app_http.HTTP_TIMEOUT_S).status_code == 200
        except requests.RequestException:  # counted as failed; the verdict says if none succeeded
            return False

    return load


def outputs_problems(outputs: dict[str, Any]) -> list[str]:
    from bisman_ops import terraform

    return terraform.check_outputs(outputs)


# -- tasks: the DAG's core_infrastructure group ---------------------------------------------------


def aws(service: str) -> Any:
    from bisman_ops.clients import aws as aws_client

    return aws_client.client(service)


def terraform_session(s: RolloutSettings, step_name: str):
    """The one Terraform session for this run and task, plus the Airflow Variable
    ``bisman_terraform_env`` (a JSON object, e.g. ``{"TF_LOG": "DEBUG"}`` while debugging a provider;
    empty normally)."""
    from airflow.sdk import Variable

    from bisman_ops.clients.terraform import TerraformSession

    extra = Variable.get(TERRAFORM_ENV_VARIABLE, default=None, deserialize_json=True) or {}
    if not isinstance(extra, dict):
        raise CheckFailed(f"Airflow Variable {TERRAFORM_ENV_VARIABLE}", type(extra).__name__,
                          "a JSON object of NAME: value", "Fix or delete the Variable, then clear this task")
    return TerraformSession(project_name=s.project_name, environment=s.environment, aws_region=s.aws_region,
                            run_id=context()["run_id"], step=step_name,
                            extra_env={str(k): str(v) for k, v in extra.items()})


def _terraform_failed(what: str, exc: Exception, next_step: str) -> CheckFailed:
    return CheckFailed(what, str(exc), "success", next_step)


@step
def terraform_init(settings: dict) -> dict:
    """The configuration initialises against this environment's backend (fails early on a bad
    configuration or an unreachable state bucket)."""
    from bisman_ops.terraform import TerraformError

    s = RolloutSettings.from_dict(settings)
    tf = terraform_session(s, "init")
    try:
        tf.prepare_from_directory(s.terraform_dir)
        tf.init()
    except TerraformError as exc:
        raise _terraform_failed("terraform init", exc, "Fix the configuration or the state backend, then "
                                                       "clear this task") from None
    finally:
        tf.cleanup()
    return {**tf.describe(), "terraform_dir": s.terraform_dir}


@step
def terraform_plan(settings: dict) -> Result:
    """Plan from the run's own settings; the plan file and its configuration kept in S3 by their
    SHA-256, summarised for the approval (database or Redis at risk first)."""
    from bisman_ops.clients.terraform import TerraformSessionError
    from bisman_ops.terraform import TerraformError

    s = RolloutSettings.from_dict(settings)
    tf = terraform_session(s, "plan")
    try:
        tf.prepare_from_directory(s.terraform_dir)
        tf.write_tfvars(s.tfvars())
        planned = tf.plan()
    except (TerraformError, TerraformSessionError) as exc:
        raise _terraform_failed("terraform plan", exc, "Fix the configuration or the params, then clear "
                                                       "terraform_plan") from None
    finally:
        tf.cleanup()
    measured = {"headline": planned["headline"], "has_changes": planned["has_changes"],
                "plan": planned["plan_uri"], "plan_sha256": planned["plan_sha256"],
                "stateful_at_risk": planned["summary"].get("stateful_at_risk")}
    return Result(value={**planned, **approval_question(planned, s)}, measured=measured,
                  sections=[plan_section(planned)])


@step.short_circuit(lease=False)
def plan_has_changes(planned: dict) -> bool:
    """A plan without changes skips the approval and the apply."""
    return bool(planned["has_changes"])


@step(changes=True)
def terraform_apply(settings: dict, planned: dict, answer: dict | None) -> Result:
    """Apply exactly the approved plan: the files from S3 whose SHA-256 the approver was shown."""
    from bisman_ops.change.approval import approved
    from bisman_ops.clients.terraform import TerraformSessionError
    from bisman_ops.terraform import TerraformError

    approved(answer, "the Terraform plan's approval")
    s = RolloutSettings.from_dict(settings)
    tf = terraform_session(s, "apply")
    started = time.monotonic()
    try:
        result = tf.apply(planned, inputs=s.tfvars())
    except TerraformSessionError as exc:
        raise CheckFailed("the plan file in S3", str(exc),
                          f"SHA-256 {planned['plan_sha256']} (the approved one)",
                          "Refusing to apply; clear terraform_plan to plan and approve again") from None
    except TerraformError as exc:
        raise CheckFailed("terraform apply", str(exc), "the approved plan applied",
                          "Terraform saved what it applied to the state; fix the cause, then clear "
                          "terraform_plan (with downstream) to plan the rest again",
                          {"plan_sha256": planned["plan_sha256"], "stopped_in": "terraform apply"}) from None
    finally:
        tf.cleanup()
    measured = {"plan_sha256": planned["plan_sha256"],
                "applied": "already, by an earlier try" if result["already_applied"] else True,
                "apply_seconds": round(time.monotonic() - started, 1)}
    return Result(value={"applied": result["applied"], "outputs": result["outputs"]}, measured=measured)


@step(trigger_rule="none_failed_min_one_success")
def terraform_outputs_checked(settings: dict, planned: dict, applied: dict | None) -> Result:
    """The outputs CONTRACT.md names are all there: from the apply, or (no changes) from the state."""
    s = RolloutSettings.from_dict(settings)
    if applied:
        outputs = applied["outputs"]
    else:
        tf = terraform_session(s, "outputs")
        try:
            outputs = tf.outputs()
        finally:
            tf.cleanup()
    fail_unless(outputs_problems(outputs), "Terraform outputs", "every output CONTRACT.md names",
                "Add them to the configuration, apply, then clear this task", {"outputs": sorted(outputs)})
    section = Section("Terraform outputs")
    section.table("terraform output -json", ["output", "value"], [[k, v] for k, v in sorted(outputs.items())])
    measured = {"outputs": len(outputs), "plan_had_changes": planned["has_changes"]}
    return Result(value=outputs, measured=measured, sections=[section])


@step.sensor(poke_interval=timedelta(seconds=20), timeout=timedelta(minutes=40))
def rds_primary_available(outputs: dict) -> Poke:
    return rds_available_poke(aws("rds"), outputs["db_instance_identifier"])


@step
def pgbouncer_connected_to_primary(outputs: dict) -> dict:
    from bisman_ops import config
    from bisman_ops.clients import pgbouncer, postgres

    with pgbouncer.connect(config.PGBOUNCER_ADMIN_CONN_ID) as admin, \
            postgres.connect(config.APP_DB_CONN_ID, autocommit=True) as app:
        return pgbouncer_fronts_primary(admin, app, outputs)


@step
def app_healthy_through_pgbouncer(outputs: dict) -> dict:
    from bisman_ops import config
    from bisman_ops.clients import app_http, pgbouncer

    results = app_http.probe_health()
    with pgbouncer.connect(config.PGBOUNCER_ADMIN_CONN_ID) as admin:
        stats = [r for r in pgbouncer.show(admin, "STATS") if r["database"] == outputs["db_name"]]
    served = int(stats[0]["total_xact_count"]) if stats else None
    return app_health(results, served, outputs["db_name"])


@step
def connections_pooled(outputs: dict) -> dict:
    from bisman_ops import config

    return measure_pooling(config.PGBOUNCER_ADMIN_CONN_ID, outputs["db_name"],
                           primary_conn_id=config.APP_DB_PRIMARY_CONN_ID)


@step
def core_infrastructure_gate(planned: dict, outputs: dict) -> dict:
    return {"plan_had_changes": planned["has_changes"], "outputs": len(outputs), "passed": True}


@phase
def core_infrastructure(settings: Any) -> Phase:
    """Terraform plan, a person's approval of exactly that plan, apply; then the outputs checked and
    the database reached through PgBouncer."""
    from airflow.sdk import chain

    from bisman_ops.change.approval import APPROVAL_TIMEOUT, ChangeApproval

    plan = terraform_plan(settings)
    answer = ChangeApproval(task_id="approve_plan", question=plan, response_timeout=APPROVAL_TIMEOUT)
    applied = terraform_apply(settings, plan, answer.output)
    outputs = terraform_outputs_checked(settings, plan, applied)
    gate = core_infrastructure_gate(plan, outputs)
    # No changes: the short-circuit skips the approval, so the apply too; the outputs still run.
    chain(terraform_init(settings), plan, plan_has_changes(plan), answer)
    chain(outputs, rds_primary_available(outputs), pgbouncer_connected_to_primary(outputs),
          app_healthy_through_pgbouncer(outputs), connections_pooled(outputs), gate)
    return Phase(gate=gate, value=outputs)
