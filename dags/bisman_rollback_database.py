"""
### Roll back the database (RDS snapshot restore)

**When:** data was damaged (a bad migration, a destructive bug) and a snapshot from before is good.
**Changes:** creates a snapshot of the live instance and a NEW instance restored from the chosen
snapshot; only if asked and approved, points the application at it. The original instance is never
deleted, renamed or modified.

**Runbook**

1. Trigger with the form: environment; the instance (empty: the environment's primary);
   `snapshot_identifier` (`latest` or an id); `target_instance_identifier` (empty: derived as
   `<instance>-rb-<run>`; never the live name); `switch_traffic`; the **reason**.
2. Type the DB instance identifier in **confirm**.
3. Under the environment's change lock, `validate_request` checks the snapshot exists, is
   `available` and belongs to that instance, and states the data lost (writes after the snapshot).
4. `take_pre_rollback_snapshot` snapshots the live instance first, so this rollback can itself be
   undone; `restore_snapshot` creates the new instance with the original's class, subnet group,
   security groups and parameter group; the sensors wait (reschedule mode) up to
   `wait_timeout_seconds` each.
5. `verify_restored_database` connects, runs SQL and checks every application table is there.
6. With `switch_traffic`: `approve_traffic_switch` waits for a human (Approve/Reject in the UI's
   Required Actions). Approved: `switch_traffic` points the application secret's `DATABASE_URL` (when
   it names the instance directly) and PgBouncer's pool at the restored instance — PAUSE, repoint,
   RELOAD, RECONNECT, RESUME, so clients queue instead of failing — and `verify_health` checks the
   health endpoints. Rejected: nothing after the approval changes.
7. The lock is released; report (JSON + Markdown) in the state bucket under `reports/<env>/`; the
   team gets the outcome with the reason.

**Undo a switch:** trigger again with the pre-rollback snapshot the report names, or point
PgBouncer back at the original instance (its name is in the report) and restore the secret's
AWSPREVIOUS version. **Clean up** the restored instance only by hand, once it is not needed.

*Sandbox:* the restored instance is a moto record; SQL checks and PgBouncer use
`BISMAN_ROLLBACK_DB_ENDPOINT_OVERRIDE` (the sandbox primary) in its place.
"""

from __future__ import annotations

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import DAG, Param, task

from bisman_ops import params
from bisman_ops.dag_defaults import CHANGE_ARGS, START_DATE

DAG_ID = "bisman_rollback_database"
TITLE = "Database rollback (RDS snapshot restore)"
STEP_IDS = [
    "acquire_change_lock",
    "notify_team_of_start",
    "validate_request",
    "take_pre_rollback_snapshot",
    "pre_rollback_snapshot_available",
    "restore_snapshot",
    "restored_instance_available",
    "verify_restored_database",
    "switch_requested",
    "approve_traffic_switch",
    "switch_traffic",
    "verify_health",
    "release_change_lock",
]
POKE_INTERVAL_S = 20
SENSOR_CEILING_S = 6 * 3600


def _plan(plan: dict):
    from bisman_ops.rollback.database import DatabaseRollbackPlan

    return DatabaseRollbackPlan.from_dict(plan)


def describe_request(p: dict) -> str:
    """What the team is told is starting."""
    return (
        f"restore of {p.get('db_instance_identifier') or 'the primary'} in "
        f"{p['environment']} from snapshot {p['snapshot_identifier']}"
        f"{' with traffic switch' if p['switch_traffic'] else ''}"
    )


@task(task_id="validate_request")
def validate_request() -> dict:
    from bisman_ops.rollback import database, runtime

    ctx = runtime.context()
    p = ctx["params"]
    with runtime.step("Plan") as section:
        plan = database.plan_rollback(
            runtime.aws_client("rds"),
            environment=p["environment"],
            db_instance_identifier=p.get("db_instance_identifier"),
            snapshot_identifier=p["snapshot_identifier"],
            target_instance_identifier=p.get("target_instance_identifier"),
            switch_traffic=bool(p["switch_traffic"]),
            confirm=p.get("confirm"),
            run_id=ctx["ti"].run_id,
        )
        section.add("instance (untouched)", plan.instance)
        section.add("snapshot", f"{plan.snapshot} taken {plan.snapshot_time}")
        section.add("data loss", plan.data_loss)
        section.add("restore into", plan.target)
        section.add("pre-rollback snapshot", plan.pre_rollback_snapshot)
        section.add("switch traffic", plan.switch_traffic)
        return plan.to_dict()


@task(task_id="take_pre_rollback_snapshot")
def take_pre_rollback_snapshot(plan: dict) -> float:
    import time

    from bisman_ops.rollback import database, runtime

    with runtime.step("Pre-rollback snapshot") as section:
        rollback = _plan(plan)
        status = database.take_pre_rollback_snapshot(runtime.aws_client("rds"), rollback)
        section.add("snapshot", f"{rollback.pre_rollback_snapshot} of {rollback.instance} ({status})")
        return time.time() + int(runtime.context()["params"]["wait_timeout_seconds"])


@task.sensor(
    task_id="pre_rollback_snapshot_available",
    mode="reschedule",
    poke_interval=POKE_INTERVAL_S,
    timeout=SENSOR_CEILING_S,
)
def pre_rollback_snapshot_available(plan: dict, deadline: float) -> bool:
    from bisman_ops.rollback import database, runtime

    rollback = _plan(plan)
    with runtime.step("Pre-rollback snapshot available") as section:
        ok, failed, detail = database.snapshot_progress(
            runtime.aws_client("rds"), rollback.pre_rollback_snapshot
        )
        return _judge(
            section, ok, failed, detail, deadline, "the pre-rollback snapshot; nothing was restored yet"
        )


def _judge(section, ok: bool, failed: bool, detail: str, deadline: float, what: str) -> bool:
    import time

    from bisman_ops.rollback import RollbackFailed, runtime

    section.add("last seen", detail)
    if failed:
        raise RollbackFailed(f"{detail}: waiting for {what} cannot succeed")
    if ok:
        return True
    if time.time() > deadline:
        raise RollbackFailed(
            f"{detail} after wait_timeout_seconds, waiting for {what}; check the RDS "
            "console's events, then clear this task to wait again"
        )
    runtime.renew_lock()
    return False


@task(task_id="restore_snapshot")
def restore_snapshot(plan: dict) -> float:
    import time

    from bisman_ops.rollback import database, runtime

    ctx = runtime.context()
    with runtime.step("Restore") as section:
        rollback = _plan(plan)
        status = database.restore(runtime.aws_client("rds"), rollback, ctx["ti"].run_id)
        section.add("restored", f"{rollback.snapshot} -> new instance {rollback.target} ({status})")
        return time.time() + int(ctx["params"]["wait_timeout_seconds"])


@task.sensor(
    task_id="restored_instance_available",
    mode="reschedule",
    poke_interval=POKE_INTERVAL_S,
    timeout=SENSOR_CEILING_S,
)
def restored_instance_available(plan: dict, deadline: float) -> bool:
    from bisman_ops.rollback import database, runtime

    rollback = _plan(plan)
    with runtime.step("Restored instance available") as section:
        ok, failed, detail = database.instance_progress(runtime.aws_client("rds"), rollback.target)
        return _judge(
            section,
            ok,
            failed,
            detail,
            deadline,
            f"{rollback.target} to become available; the original {rollback.instance} is untouched",
        )


@task(task_id="verify_restored_database")
def verify_restored_database(plan: dict) -> str:
    from airflow.sdk import BaseHook

    from bisman_ops import config
    from bisman_ops.rollback import database, runtime

    with runtime.step("Restored database verified") as section:
        rollback = _plan(plan)
        rds = runtime.aws_client("rds")
        section.table(
            "Settings copied from the original",
            ["setting", "original", "restored"],
            database.restored_settings(rds, rollback),
        )
        host, port, how = database.sql_endpoint(rds, rollback.target)
        creds = BaseHook.get_connection(config.APP_DB_PRIMARY_CONN_ID)
        seen = database.verify_restored(host, port, creds.schema, creds.login, creds.password)
        section.add(
            "SQL",
            f"answers at {host}:{port} ({how}); {seen['tables']} application tables, "
            f"{seen['tenants']} tenants",
        )
        return (
            f"Point the application at **{rollback.target}** (restored from `{rollback.snapshot}`, "
            f"taken {rollback.snapshot_time}).\n\n**Data loss:** {rollback.data_loss}.\n\n"
            f"The original `{rollback.instance}` stays as it is; pre-rollback snapshot "
            f"`{rollback.pre_rollback_snapshot}`.\n\nReason given: {runtime.context()['params']['reason']}"
        )


@task.short_circuit(task_id="switch_requested", ignore_downstream_trigger_rules=False)
def switch_requested() -> bool:
    from bisman_ops.rollback import runtime

    return bool(runtime.context()["params"]["switch_traffic"])


@task(task_id="switch_traffic")
def switch_traffic(plan: dict) -> None:
    import os

    from airflow.sdk import BaseHook

    from bisman_ops import config
    from bisman_ops.rollback import database, resource_names, runtime

    ctx = runtime.context()
    with runtime.step("Traffic switched") as section:
        rollback = _plan(plan)
        rds = runtime.aws_client("rds")
        target = database.describe_instance(rds, rollback.target) or {}
        address = (target.get("Endpoint") or {}).get("Address") or rollback.target
        names = resource_names(rollback.environment)
        section.values.update(
            database.switch_secret(
                runtime.aws_client("secretsmanager"), names.app_secret_name, rollback, address
            )
        )
        host, port, how = database.sql_endpoint(rds, rollback.target)
        admin = BaseHook.get_connection(config.PGBOUNCER_ADMIN_CONN_ID)
        app_db = BaseHook.get_connection(config.APP_DB_CONN_ID)
        admin_dsn = (
            f"host={admin.host} port={admin.port} dbname={admin.schema} user={admin.login} "
            f"password={admin.password}"
        )
        done = database.switch_pgbouncer(
            admin_dsn,
            os.environ[database.PGBOUNCER_INI_ENV],
            app_db.schema,
            host,
            port,
            f"restored {rollback.target} by {ctx['ti'].run_id}",
        )
        section.values.update(done)
        section.add("PgBouncer target", how)


@task(task_id="verify_health")
def verify_health() -> None:
    from bisman_ops import app_api
    from bisman_ops.rollback import health, runtime

    with runtime.step("Health after the switch") as section:
        section.table("Health", ["path", "status", "ms"], health.check_health(app_api.base_url()))


with DAG(
    dag_id=DAG_ID,
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=CHANGE_ARGS,
    tags=["bisman", "rollback"],
    doc_md=__doc__,
    params={
        "environment": params.environment(),
        "db_instance_identifier": params.identifier("DB instance", "Empty: the environment's primary."),
        "snapshot_identifier": Param(
            "latest",
            type="string",
            pattern=params.SNAPSHOT_PATTERN,
            title="Snapshot",
            description="`latest` or a snapshot identifier.",
        ),
        "target_instance_identifier": params.identifier(
            "Restore into", "Empty: derived from the instance and the run; never the live instance."
        ),
        "switch_traffic": Param(
            False,
            type="boolean",
            title="Switch traffic",
            description="Point the application at the restored instance (asks for approval first).",
        ),
        "wait_timeout_seconds": Param(
            5400,
            type="integer",
            minimum=30,
            maximum=6 * 3600,
            title="Wait for available (seconds)",
            description="How long each snapshot and the restore may take.",
        ),
        "reason": params.reason(),
        "confirm": params.confirm("the DB instance identifier"),
    },
) as dag:
    from bisman_ops.rollback import runtime_tasks

    lock, started = runtime_tasks.opening(TITLE, describe_request)
    plan = validate_request()
    snap_deadline = take_pre_rollback_snapshot(plan)
    snapshot_ready = pre_rollback_snapshot_available(plan, snap_deadline)
    restore_deadline = restore_snapshot(plan)
    restored = restored_instance_available(plan, restore_deadline)
    approval_body = verify_restored_database(plan)
    approve = ApprovalOperator(
        task_id="approve_traffic_switch",
        subject="Switch the application to the restored database?",
        body="{{ ti.xcom_pull(task_ids='verify_restored_database') }}",
    )
    switched = switch_traffic(plan)
    healthy = verify_health()
    release, report = runtime_tasks.teardowns(
        lock, TITLE, STEP_IDS, "The snapshot was restored into a new instance and verified."
    )
    started >> plan
    snapshot_ready >> restore_deadline
    restored >> approval_body >> switch_requested() >> approve >> switched >> healthy >> release >> report
