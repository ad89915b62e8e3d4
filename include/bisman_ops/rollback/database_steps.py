"""The database rollback's tasks (bisman_rollback_database), each a step of the change layer.
Airflow clients are obtained here, at the edge; the checks live in ``rollback.database``."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from bisman_ops import config
from bisman_ops.change.approval import approved
from bisman_ops.change.step import Poke, Result, context, step
from bisman_ops.rollback import database, resource_names

POKE_INTERVAL = timedelta(seconds=20)


def _plan(plan: dict) -> database.DatabaseRollbackPlan:
    return database.DatabaseRollbackPlan.from_dict(plan)


def _aws(service: str) -> Any:
    from bisman_ops.clients import aws

    return aws.client(service)


@step(lease=False)
def validate_request() -> dict:
    """Everything about the request checked before the lock is taken or anyone is paged."""
    from bisman_ops.rollback import interfaces

    ctx = context()
    p = ctx["params"]
    plan = database.validate_request(
        _aws("rds"),
        _aws("secretsmanager"),
        names=resource_names(p["environment"]),
        db_instance_identifier=p.get("db_instance_identifier"),
        snapshot_identifier=p["snapshot_identifier"],
        target_instance_identifier=p.get("target_instance_identifier"),
        switch_traffic=bool(p["switch_traffic"]),
        confirm=p.get("confirm"),
        run_id=ctx["ti"].run_id,
        switch_available=interfaces.pgbouncer_config() is not None,
    )
    return Result(
        value={**plan.to_dict(), "approval_text": plan.approval_text(str(p.get("reason", "")))},
        measured={
            "instance (untouched)": plan.instance,
            "in environment": plan.bound_by,
            "snapshot": f"{plan.snapshot} taken {plan.snapshot_time}",
            "data loss": plan.data_loss,
            "restore into": plan.target,
            "pre-rollback snapshot": plan.pre_rollback_snapshot,
            "switch traffic": plan.switch_traffic,
        },
    )


def _strip(plan: dict) -> database.DatabaseRollbackPlan:
    return _plan({k: v for k, v in plan.items() if k != "approval_text"})


@step(changes=True)
def take_pre_rollback_snapshot(plan: dict) -> dict:
    return database.take_pre_rollback_snapshot(_aws("rds"), _strip(plan))


@step.sensor(poke_interval=POKE_INTERVAL, timeout=timedelta(hours=2), timeout_param="wait_timeout_seconds")
def pre_rollback_snapshot_available(plan: dict) -> Poke:
    from bisman_ops.clients import rds

    name = plan["pre_rollback_snapshot"]
    return database.snapshot_poke(rds.snapshot_state(name), name)


@step(changes=True)
def restore_snapshot(plan: dict) -> dict:
    return database.restore(_aws("rds"), _strip(plan), context()["ti"].run_id)


@step.sensor(poke_interval=POKE_INTERVAL, timeout=timedelta(hours=2), timeout_param="wait_timeout_seconds")
def restored_instance_available(plan: dict) -> Poke:
    from bisman_ops.clients import rds

    return database.instance_poke(rds.instance_state(plan["target"]), plan["target"])


@step
def verify_restored_database(plan: dict) -> Result:
    """The new instance has the original's settings and answers SQL with every application table."""
    from bisman_ops.change.report import Section
    from bisman_ops.clients import postgres
    from bisman_ops.rollback import interfaces

    rollback = _strip(plan)
    rds = _aws("rds")
    rows = database.restored_settings(rds, rollback)
    host, port = interfaces.database_endpoints().endpoint(rds, rollback.target)
    with postgres.connect(
        config.APP_DB_PRIMARY_CONN_ID,
        host=host,
        port=port,
        autocommit=True,
        application_name="bisman_rollback_database",
    ) as conn:
        seen = database.verify_restored(conn, f"{host}:{port}")
    section = Section("Restored database")
    section.table("Settings copied from the original", ["setting", "original", "restored"], rows)
    return Result(
        value={"host": host, "port": port, "instance": rollback.instance, "target": rollback.target},
        measured=seen,
        sections=[section],
    )


def switch_requested() -> bool:
    """Short-circuit: go on to the approval only when the form asked to switch traffic."""
    return bool(context()["params"]["switch_traffic"])


@step(changes=True)
def switch_traffic(plan: dict, restored: dict, answer: dict | None) -> dict:
    """After a person approved: repoint PgBouncer's pool at the restored instance."""
    from bisman_ops.rollback import interfaces

    approved(answer, "the traffic switch's approval")
    done = database.switch_pgbouncer(
        config.PGBOUNCER_ADMIN_CONN_ID,
        interfaces.pgbouncer_config(),
        _app_database()[2],
        restored["host"],
        int(restored["port"]),
        float(context()["params"].get("pause_timeout_seconds") or database.DEFAULT_PAUSE_TIMEOUT_S),
        replicas=_replicas_of(plan["instance"]),
    )
    return {**done, "restored instance": plan["target"]}


def _replicas_of(instance: str) -> dict[str, tuple[str, int]]:
    """Where the read replicas of ``instance`` (the abandoned lineage) answer."""
    from bisman_ops.rollback import interfaces

    return database.replica_endpoints(_aws("rds"), interfaces.database_endpoints(), instance)


def _app_database() -> tuple[str, int, str]:
    from airflow.sdk import BaseHook

    c = BaseHook.get_connection(config.APP_DB_CONN_ID)
    return c.host or "", int(c.port or 5432), c.schema or ""


@step(lease=False)
def pgbouncer_resumed() -> dict:
    """Teardown of the switch: RESUME the pool if a switch left it paused."""
    return database.resume_pgbouncer(config.PGBOUNCER_ADMIN_CONN_ID, _app_database()[2])


@step
def traffic_on_restored_instance(restored: dict) -> dict:
    """PgBouncer lists the restored instance and a query through it is answered there; no pool is
    left on a replica of the original, and the read-only pools that followed answer there too."""
    from bisman_ops.clients import pgbouncer, postgres

    database_name, host, port = _app_database()[2], restored["host"], int(restored["port"])

    def through(pool: str) -> Any:
        return postgres.connect(
            config.APP_DB_CONN_ID, dbname=pool, autocommit=True, application_name="bisman_rollback_database"
        )

    replicas = _replicas_of(restored["instance"]) if restored.get("instance") else {}
    with (
        pgbouncer.connect(config.PGBOUNCER_ADMIN_CONN_ID) as admin,
        through(database_name) as app,
    ):
        seen = database.verify_switch(admin, app, database_name, host, port)
        return {**seen, **database.verify_followers(admin, through, database_name, host, port, replicas)}
