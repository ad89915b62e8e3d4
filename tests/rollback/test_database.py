"""Database rollback logic against the sandbox's moto RDS, its real PostgreSQL (the primary and a
restored instance of its own) and its real PgBouncer."""

from __future__ import annotations

import json
import time
import uuid
from datetime import timedelta

import jsonschema
import psycopg
import pytest

from bisman_ops import config
from bisman_ops.change.errors import CheckFailed
from bisman_ops.clients import pgbouncer as pgb
from bisman_ops.clients import postgres as pg
from bisman_ops.rollback import RDS_IDENTIFIER_PATTERN, database_steps, resource_names
from bisman_ops.rollback import database as db
from bisman_sandbox import aws, launcher, pgbouncer, postgres
from bisman_sandbox import context as sandbox_context
from bisman_sandbox.context import HOST
from bisman_sandbox.process import SandboxError, wait_until
from bisman_sandbox.rollback_impl import SandboxDatabaseEndpoints, SandboxPgBouncerConfig
from tests.rollback.conftest import primary_dsn

N = aws.names()
PRIMARY = N.db_instance_identifier
RUN_ID = f"manual__test-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def airflow_conns(ctx):
    """The sandbox's connections as AIRFLOW_CONN_* for the product's clients."""
    mp = pytest.MonkeyPatch()
    for conn_id, conn in launcher.connections(ctx).items():
        mp.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
    yield
    mp.undo()


@pytest.fixture(scope="module")
def snapshots(clients):
    """An available snapshot of the primary and one of the replica (another instance)."""
    rds = clients["rds"]
    mine = f"{PRIMARY}-test-{uuid.uuid4().hex[:6]}"
    other = f"{N.db_replica_identifier}-test-{uuid.uuid4().hex[:6]}"
    rds.create_db_snapshot(DBSnapshotIdentifier=mine, DBInstanceIdentifier=PRIMARY)
    rds.create_db_snapshot(DBSnapshotIdentifier=other, DBInstanceIdentifier=N.db_replica_identifier)
    return {"mine": mine, "other": other}


def request(clients, **overrides):
    args = {
        "names": resource_names("staging", {}),
        "db_instance_identifier": None,
        "snapshot_identifier": "latest",
        "target_instance_identifier": None,
        "switch_traffic": False,
        "confirm": PRIMARY,
        "run_id": RUN_ID,
        "switch_available": True,
    } | overrides
    return db.validate_request(clients["rds"], clients["secretsmanager"], **args)


def test_latest_snapshot_is_chosen_and_the_data_loss_is_stated(clients, snapshots, unchanged):
    rds = clients["rds"]
    taken = db.describe_snapshot(rds, snapshots["mine"])["SnapshotCreateTime"]
    plan = request(clients, now=taken + timedelta(hours=2, minutes=5))
    assert plan.snapshot == db.latest_snapshot(rds, PRIMARY)["DBSnapshotIdentifier"]
    explicit = request(
        clients, snapshot_identifier=snapshots["mine"], now=taken + timedelta(hours=2, minutes=5)
    )
    assert explicit.data_loss_seconds == pytest.approx(7500, abs=1)
    assert "(2 h 5 min before this check)" in explicit.data_loss
    assert explicit.target.startswith(f"{PRIMARY}-rb-") and explicit.target != PRIMARY
    assert explicit.instance_class == aws.DB_INSTANCE_CLASS
    assert explicit.subnet_group and explicit.parameter_group and explicit.security_group_ids
    assert explicit.bound_by == "by name"


@pytest.mark.parametrize("confirm", [None, "", N.db_replica_identifier])
def test_missing_or_wrong_confirm_is_refused(clients, unchanged, confirm):
    with pytest.raises(CheckFailed, match="confirm: seen") as err:
        request(clients, confirm=confirm)
    assert PRIMARY in err.value.expected


@pytest.mark.parametrize("bad", ["abc--def", "abc-", "1abc", "a" * 64, "abc_def"])
def test_identifiers_rds_refuses_are_refused_by_the_form_and_the_validation(clients, unchanged, bad):
    # The form's pattern (Airflow validates params with jsonschema) ...
    from dags.bisman_rollback_database import DB_IDENTIFIER

    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, {"type": ["null", "string"], "pattern": DB_IDENTIFIER})
    # ... and the validation, before any snapshot is taken (the world stays unchanged).
    with pytest.raises(CheckFailed, match="target_instance_identifier: seen") as err:
        request(clients, target_instance_identifier=bad)
    assert "no two hyphens" in err.value.expected or "hyphens in a row" in err.value.expected


@pytest.mark.parametrize("good", ["a", "abc-def", "Restored1", "a" * 63, "a-b-c-1"])
def test_identifiers_rds_accepts_pass(good):
    import re

    assert re.search(RDS_IDENTIFIER_PATTERN, good)


def test_an_instance_of_another_environment_is_refused_before_the_lock(clients, unchanged):
    prod = aws.names("prod").db_instance_identifier
    with pytest.raises(CheckFailed, match=f"DB instance {prod} belongs to staging"):
        request(clients, db_instance_identifier=prod, confirm=prod)


def test_snapshot_that_does_not_exist_is_refused(clients, unchanged):
    with pytest.raises(CheckFailed, match="'no-such-snapshot' does not exist"):
        request(clients, snapshot_identifier="no-such-snapshot")


def test_snapshot_of_another_instance_is_refused(clients, snapshots, unchanged):
    with pytest.raises(CheckFailed, match=f"belongs to '{N.db_replica_identifier}'"):
        request(clients, snapshot_identifier=snapshots["other"])


@pytest.mark.parametrize("target", [PRIMARY, PRIMARY.upper()])
def test_target_equal_to_the_live_instance_is_refused(clients, unchanged, target):
    with pytest.raises(CheckFailed, match="a NEW instance's name"):
        request(clients, target_instance_identifier=target)


def test_target_that_already_exists_is_refused(clients, unchanged):
    with pytest.raises(CheckFailed, match="already exists"):
        request(clients, target_instance_identifier=N.db_replica_identifier)


def test_switch_without_a_pgbouncer_configuration_is_refused_before_any_change(clients, unchanged):
    with pytest.raises(CheckFailed, match="no PgBouncer configuration"):
        request(clients, switch_traffic=True, switch_available=False)


def test_switch_when_the_secret_names_the_instance_directly_is_refused(clients):
    """Rewriting the secret alone would leave running tasks on the original: refuse instead."""
    sm, rds = clients["secretsmanager"], clients["rds"]
    live = rds.describe_db_instances(DBInstanceIdentifier=PRIMARY)["DBInstances"][0]["Endpoint"]["Address"]
    original = sm.get_secret_value(SecretId=N.app_secret_name)["SecretString"]
    direct = dict(json.loads(original), DATABASE_URL=f"postgresql://u:pw@{live}:5432/{N.db_name}")
    sm.put_secret_value(SecretId=N.app_secret_name, SecretString=json.dumps(direct))
    try:
        with pytest.raises(CheckFailed, match=r"names .* directly, not PgBouncer"):
            request(clients, switch_traffic=True)
    finally:
        sm.put_secret_value(SecretId=N.app_secret_name, SecretString=original)
    assert request(clients, switch_traffic=True).switch_traffic  # through PgBouncer: accepted


def test_the_secret_read_at_run_time_is_masked_string_and_database_url(clients, snapshots, monkeypatch,
                                                                       unchanged):
    """issue 11 point 6: a Secrets Manager value (the whole SecretString and the DATABASE_URL in it)
    goes through mask_secret as soon as it is read, before anything could log it."""
    masked: list[str] = []
    monkeypatch.setattr(db, "mask", masked.append)  # the mask function the module calls
    raw = clients["secretsmanager"].get_secret_value(SecretId=N.app_secret_name)["SecretString"]
    url = json.loads(raw)["DATABASE_URL"]

    assert request(clients, switch_traffic=True).switch_traffic  # the switch reads the secret
    assert raw in masked and url in masked
    masked.clear()
    db._secret_database_host(clients["secretsmanager"], N.app_secret_name)
    assert masked == [raw, url]


def test_mask_hands_the_value_to_airflows_mask_secret(monkeypatch):
    import airflow.sdk.log

    from bisman_ops.rollback import mask

    seen: list[str] = []
    monkeypatch.setattr(airflow.sdk.log, "mask_secret", seen.append)
    mask("postgresql://app:pw@db:5432/app")
    mask("")  # nothing to hide
    assert seen == ["postgresql://app:pw@db:5432/app"]


@pytest.fixture(scope="module")
def restored(ctx, clients, snapshots):
    """A restore through the product, and the sandbox's real server for the restored instance."""
    rds = clients["rds"]
    plan = request(
        clients,
        snapshot_identifier=snapshots["mine"],
        target_instance_identifier=f"{PRIMARY}-t-{uuid.uuid4().hex[:6]}",
    )
    db.restore(rds, plan, RUN_ID)
    host, port = SandboxDatabaseEndpoints(ctx).endpoint(rds, plan.target)
    yield {"plan": plan, "host": host, "port": port}
    postgres.stop_restored(ctx, plan.target, remove=True)


def test_restore_creates_a_new_instance_like_the_original_and_leaves_it_untouched(clients, restored):
    rds, plan = clients["rds"], restored["plan"]
    assert db.restored_settings(rds, plan)  # class, subnet group, security groups, parameter group
    again = db.restore(rds, plan, RUN_ID)  # a retried task does not restore twice
    assert again["again"] is True
    original = db.describe_instance(rds, PRIMARY)
    assert original["DBInstanceStatus"] == "available"
    assert db.instance_poke(db.describe_instance(rds, plan.target)["DBInstanceStatus"], plan.target).done


def test_the_restored_instance_is_a_server_of_its_own_with_the_snapshot_data(ctx, airflow_conns, restored):
    marker = f"after-snapshot-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(primary_dsn(ctx), autocommit=True) as primary:
        primary.execute(
            "INSERT INTO events (tenant_id, type, payload) SELECT id, 'test', %s::jsonb FROM tenants LIMIT 1",
            (json.dumps({"marker": marker}),),
        )
        primary_port = primary.execute("SELECT inet_server_port()").fetchone()[0]
        tenants = primary.execute("SELECT count(*) FROM tenants").fetchone()[0]
    with pg.connect(
        config.APP_DB_PRIMARY_CONN_ID, host=restored["host"], port=restored["port"], autocommit=True
    ) as conn:
        seen = db.verify_restored(conn, f"{restored['host']}:{restored['port']}")
        assert conn.execute("SELECT inet_server_port()").fetchone()[0] == restored["port"] != primary_port
        later = conn.execute(
            "SELECT count(*) FROM events WHERE payload->>'marker' = %s", (marker,)
        ).fetchone()[0]
    assert seen["application tables"] == len(db.APPLICATION_TABLES)
    assert seen["tenants"] == tenants > 0
    assert later == 0  # written to the primary after the snapshot: not in the restored instance


def _insert_marker(ctx, marker: str) -> None:
    with psycopg.connect(primary_dsn(ctx), autocommit=True) as primary:
        primary.execute(
            "INSERT INTO events (tenant_id, type, payload) SELECT id, 'test', %s::jsonb FROM tenants LIMIT 1",
            (json.dumps({"marker": marker}),),
        )


def test_the_restore_holds_the_data_at_the_snapshots_point_in_time(ctx, clients, airflow_conns):
    """issue 23 point 14: a row written after the snapshot but before the restore is not in the
    restored instance; one written before the snapshot is (the sandbox replays its WAL archive to
    the snapshot's time, as RDS restores a snapshot)."""
    rds = clients["rds"]
    before, after = (f"{w}-snapshot-{uuid.uuid4().hex[:8]}" for w in ("before", "after"))
    _insert_marker(ctx, before)
    time.sleep(1.1)  # moto's snapshot time may be to the second
    snapshot = f"{PRIMARY}-pit-{uuid.uuid4().hex[:6]}"
    rds.create_db_snapshot(DBSnapshotIdentifier=snapshot, DBInstanceIdentifier=PRIMARY)
    time.sleep(1.1)
    _insert_marker(ctx, after)  # after the snapshot, before the restore
    plan = request(clients, snapshot_identifier=snapshot,
                   target_instance_identifier=f"{PRIMARY}-p-{uuid.uuid4().hex[:6]}")
    db.restore(rds, plan, RUN_ID)
    try:
        host, port = SandboxDatabaseEndpoints(ctx).endpoint(rds, plan.target)
        with pg.connect(config.APP_DB_PRIMARY_CONN_ID, host=host, port=port, autocommit=True) as conn:
            found = {m: conn.execute("SELECT count(*) FROM events WHERE payload->>'marker' = %s",
                                     (m,)).fetchone()[0] for m in (before, after)}
            writable = not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]
    finally:
        postgres.stop_restored(ctx, plan.target, remove=True)
    assert found == {before: 1, after: 0}
    assert writable  # promoted at the target, as a restored RDS instance opens read-write


def test_a_restore_to_before_the_sandboxs_restore_base_is_refused_before_anything_is_made(ctx):
    taken = postgres.restore_base_time(ctx)
    assert taken is not None
    name = f"too-early-{uuid.uuid4().hex[:6]}"
    with pytest.raises(SandboxError, match="WAL archive begins at its restore base"):
        postgres.ensure_restored(ctx, name, at=taken - timedelta(hours=1))
    assert not postgres.restored_dir(ctx, name).exists()
    assert not (postgres.restored_dir(ctx, name).parent / f"{name}.port").exists()


def test_a_database_without_the_application_tables_fails_verification(ctx, airflow_conns):
    with (
        pg.connect(config.APP_DB_PRIMARY_CONN_ID, dbname="postgres", autocommit=True) as conn,
        pytest.raises(CheckFailed, match="lacks tables tenants"),
    ):
        db.verify_restored(conn, "postgres")


def test_pgbouncer_entry_is_repointed_without_a_trailing_comment():
    text = (
        "[databases]\n; keep me\nbisman_staging = host=10.0.0.1 port=5432 dbname=bisman_staging\n"
        "bisman_staging_ro = host=10.0.0.2 port=5432 dbname=bisman_staging\n\n"
        "[pgbouncer]\nlisten_port = 6432\n"
    )
    new, previous = db.repoint_pgbouncer_ini(text, "bisman_staging", "10.9.9.9", 6543)
    assert previous == "host=10.0.0.1 port=5432 dbname=bisman_staging"
    lines = new.splitlines()
    entry = next(line for line in lines if line.startswith("bisman_staging ="))
    assert entry == "bisman_staging = host=10.9.9.9 port=6543 dbname=bisman_staging"
    assert "; bisman_staging was: host=10.0.0.1 port=5432 dbname=bisman_staging" in lines
    assert "bisman_staging_ro = host=10.0.0.2 port=5432 dbname=bisman_staging" in lines
    with pytest.raises(CheckFailed, match="no entry 'nope'"):
        db.repoint_pgbouncer_ini(text, "nope", "h", 1)


@pytest.fixture
def pgbouncer_restored_afterwards(ctx):
    """Whatever a test does to PgBouncer's configuration, it points at the primary again after."""
    cfg = SandboxPgBouncerConfig(ctx)
    before = cfg.read()
    yield cfg
    cfg.write(before)
    with psycopg.connect(pgbouncer.dsn(ctx, "admin"), autocommit=True, prepare_threshold=None) as admin:
        admin.execute("RELOAD")
        admin.execute(f"RECONNECT {pgbouncer.RW_DB}")
        admin.execute(f"RECONNECT {pgbouncer.RO_DB}")
        if any(r[0] == pgbouncer.RW_DB and r[11] for r in admin.execute("SHOW DATABASES").fetchall()):
            admin.execute(f"RESUME {pgbouncer.RW_DB}")


def test_switch_moves_pgbouncer_to_the_restored_instance_and_a_query_proves_it(
    ctx, airflow_conns, restored, pgbouncer_restored_afterwards
):
    host, port = restored["host"], restored["port"]
    log = ctx.log_dir / "pgbouncer.log"
    log_before = log.stat().st_size if log.exists() else 0
    done = db.switch_pgbouncer(
        config.PGBOUNCER_ADMIN_CONN_ID,
        pgbouncer_restored_afterwards,
        pgbouncer.RW_DB,
        host,
        port,
        pause_timeout_s=10,
    )
    assert done["after"] == f"host={host} port={port}"
    with pgb.connect() as admin, pg.connect(config.APP_DB_CONN_ID, autocommit=True) as app:
        seen = db.verify_switch(admin, app, pgbouncer.RW_DB, host, port)
        assert not int(pgb.database_entry(admin, pgbouncer.RW_DB)["paused"])
    assert seen == {"SHOW DATABASES": f"{host}:{port}", "query answered by": f"{host}:{port}"}
    with log.open("rb") as f:
        f.seek(log_before)
        assert b"syntax error" not in f.read()


def _count_marker(conn, marker: str) -> int:
    return conn.execute("SELECT count(*) FROM events WHERE payload->>'marker' = %s", (marker,)).fetchone()[0]


def _pool(ctx, which: str):
    return psycopg.connect(pgbouncer.dsn(ctx, which), autocommit=True, prepare_threshold=None)


def test_the_read_only_pool_follows_the_restored_primary_and_reads_the_restored_lineage(
    ctx, airflow_conns, restored, pgbouncer_restored_afterwards, monkeypatch
):
    """issue 23 point 2: after the switch, reads through the read-only pool reach the restored
    instance (a row only its lineage has), not the replica of the abandoned primary. The DAG's own
    tasks: switch_traffic, then traffic_on_restored_instance."""
    for key, value in launcher.airflow_connection_env(ctx).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(database_steps, "context", lambda: {"params": {"pause_timeout_seconds": 10}})
    host, port = restored["host"], restored["port"]
    verified = {"host": host, "port": port, "instance": PRIMARY, "target": restored["plan"].target}
    approval = {"approved": True, "chosen": "Approve", "responded_by_user": {"name": "test"}}

    done = database_steps.switch_traffic.function.__wrapped__(restored["plan"].to_dict(), verified, approval)

    marker = f"restored-lineage-{uuid.uuid4().hex[:8]}"
    with _pool(ctx, "rw") as rw:  # written through the application's pool: on the restored instance
        rw.execute(
            "INSERT INTO events (tenant_id, type, payload) SELECT id, 'test', %s::jsonb FROM tenants LIMIT 1",
            (json.dumps({"marker": marker}),),
        )
    with _pool(ctx, "ro") as ro:
        assert ro.execute("SELECT inet_server_port()").fetchone()[0] == port
        assert _count_marker(ro, marker) == 1  # the read-only pool reads the restored lineage
    with psycopg.connect(postgres.dsn(ctx, "replica"), autocommit=True) as old_replica:
        assert _count_marker(old_replica, marker) == 0  # the abandoned lineage never saw it
    with pgb.connect() as admin:
        assert pgb.database_entry(admin, pgbouncer.RO_DB)["port"] == port
    seen = database_steps.traffic_on_restored_instance.function.__wrapped__(verified)
    assert seen["read-only pools answered by"] == {pgbouncer.RO_DB: f"{host}:{port}"}
    replica_port = ctx.port("postgres_replica")
    assert done["read-only pools moved"] == {
        pgbouncer.RO_DB: f"host={HOST} port={replica_port} dbname={sandbox_context.DB_NAME} "
        f"(on {N.db_replica_identifier}) -> host={host} port={port}"
    }


def test_a_read_only_pool_left_on_the_old_replica_fails_the_verification(
    ctx, airflow_conns, clients, restored, pgbouncer_restored_afterwards
):
    """The switch as it was before issue 23: the read-write pool alone moved."""
    host, port = restored["host"], restored["port"]
    db.switch_pgbouncer(
        config.PGBOUNCER_ADMIN_CONN_ID, pgbouncer_restored_afterwards, pgbouncer.RW_DB, host, port, 10
    )
    replicas = db.replica_endpoints(clients["rds"], SandboxDatabaseEndpoints(ctx), PRIMARY)
    assert replicas == {N.db_replica_identifier: (HOST, ctx.port("postgres_replica"))}
    with (
        pgb.connect() as admin,
        pytest.raises(CheckFailed, match=f"seen {pgbouncer.RO_DB} on {N.db_replica_identifier}") as err,
    ):
        db.verify_followers(admin, None, pgbouncer.RW_DB, host, port, replicas)
    assert "reads would serve the old lineage" in err.value.next_step


def test_a_reload_that_pgbouncer_rejects_is_caught_by_the_verification(
    ctx, airflow_conns, restored, pgbouncer_restored_afterwards
):
    """The old defect: a trailing comment breaks the line, RELOAD answers OK, nothing moved."""
    cfg = pgbouncer_restored_afterwards
    broken, _ = db.repoint_pgbouncer_ini(cfg.read(), pgbouncer.RW_DB, restored["host"], restored["port"])
    broken = broken.replace(f"port={restored['port']} dbname", f"port={restored['port']} ; restored dbname")
    cfg.write(broken)
    log = ctx.log_dir / "pgbouncer.log"
    log_before = log.stat().st_size
    with pgb.connect() as admin:
        pgb.command(admin, "RELOAD")  # answers OK all the same
        wait_until(lambda: b"syntax error" in log.read_bytes()[log_before:], timeout=10,
                   what="PgBouncer to log the broken line")
        with (
            pg.connect(config.APP_DB_CONN_ID, autocommit=True) as app,
            pytest.raises(CheckFailed, match="PgBouncer did not take the new entry"),
        ):
            db.verify_switch(admin, app, pgbouncer.RW_DB, restored["host"], restored["port"])


def test_pause_is_bounded_and_the_pool_is_resumed_when_a_transaction_holds_it(
    ctx, airflow_conns, restored, pgbouncer_restored_afterwards
):
    before = pgbouncer_restored_afterwards.read()
    with psycopg.connect(pgbouncer.dsn(ctx, "rw"), prepare_threshold=None) as long_job:
        long_job.execute("SELECT 1")  # a transaction is open and holds a server connection
        with pytest.raises(CheckFailed, match="PAUSE bisman_staging"):
            db.switch_pgbouncer(
                config.PGBOUNCER_ADMIN_CONN_ID,
                pgbouncer_restored_afterwards,
                pgbouncer.RW_DB,
                restored["host"],
                restored["port"],
                pause_timeout_s=1,
            )
        assert long_job.execute("SELECT 2").fetchone() == (2,)  # the job goes on
    with pgb.connect() as admin:
        assert not int(pgb.database_entry(admin, pgbouncer.RW_DB)["paused"])
        assert pgb.database_entry(admin, pgbouncer.RW_DB)["port"] == ctx.port("postgres_primary")
    assert pgbouncer_restored_afterwards.read() == before  # nothing was rewritten


def test_the_resume_teardown_resumes_a_pool_left_paused(ctx, airflow_conns):
    pgb.pause(config.PGBOUNCER_ADMIN_CONN_ID, pgbouncer.RW_DB, timeout_s=10)
    try:
        assert db.resume_pgbouncer(config.PGBOUNCER_ADMIN_CONN_ID, pgbouncer.RW_DB) == {"resumed": True}
        assert db.resume_pgbouncer(config.PGBOUNCER_ADMIN_CONN_ID, pgbouncer.RW_DB) == {"resumed": False}
    finally:
        with pgb.connect() as admin:
            pgb.resume_if_paused(admin, pgbouncer.RW_DB)


def test_switch_without_a_recorded_approval_changes_nothing(ctx, restored, pgbouncer_restored_afterwards):
    before = pgbouncer_restored_afterwards.read()
    body = database_steps.switch_traffic.function.__wrapped__
    for answer in (None, {"approved": False, "chosen": "Reject", "responded_by_user": {"name": "a"}}):
        with pytest.raises(CheckFailed, match="the traffic switch's approval"):
            body(restored["plan"].to_dict(), {"host": restored["host"], "port": restored["port"]}, answer)
    assert pgbouncer_restored_afterwards.read() == before


def test_data_loss_reads_in_days_hours_and_minutes():
    assert db.human_duration(59) == "0 min"
    assert db.human_duration(3 * 86400 + 2 * 3600 + 5 * 60) == "3 d 2 h 5 min"
    assert db.human_duration(3600) == "1 h 0 min"
