"""Database rollback logic against the sandbox's moto RDS and its real PostgreSQL and PgBouncer."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import boto3
import psycopg
import pytest
from moto import mock_aws

from bisman_ops.rollback import RollbackFailed, RollbackRefused
from bisman_ops.rollback import database as db
from bisman_sandbox import aws, pgbouncer
from tests.rollback.conftest import primary_dsn

N = aws.names()
PRIMARY = N.db_instance_identifier
RUN_ID = f"manual__test-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def snapshots(clients):
    """An available snapshot of the primary and one of the replica (another instance)."""
    rds = clients["rds"]
    mine = f"{PRIMARY}-test-{uuid.uuid4().hex[:6]}"
    other = f"{N.db_replica_identifier}-test-{uuid.uuid4().hex[:6]}"
    rds.create_db_snapshot(DBSnapshotIdentifier=mine, DBInstanceIdentifier=PRIMARY)
    rds.create_db_snapshot(DBSnapshotIdentifier=other, DBInstanceIdentifier=N.db_replica_identifier)
    return {"mine": mine, "other": other}


def request(rds, **overrides):
    args = {
        "environment": "staging",
        "db_instance_identifier": None,
        "snapshot_identifier": "latest",
        "target_instance_identifier": None,
        "switch_traffic": False,
        "confirm": PRIMARY,
        "run_id": RUN_ID,
        "environ": {},
    } | overrides
    return db.plan_rollback(rds, **args)


def test_latest_snapshot_is_chosen_and_the_data_loss_is_stated(clients, snapshots, unchanged):
    rds = clients["rds"]
    taken = db.describe_snapshot(rds, snapshots["mine"])["SnapshotCreateTime"]
    plan = request(rds, now=taken + timedelta(hours=2, minutes=5))
    assert plan.snapshot == db.latest_snapshot(rds, PRIMARY)["DBSnapshotIdentifier"]
    explicit = request(rds, snapshot_identifier=snapshots["mine"], now=taken + timedelta(hours=2, minutes=5))
    assert explicit.data_loss_seconds == pytest.approx(7500, abs=1)
    assert "(2 h 5 min before this check)" in explicit.data_loss
    assert explicit.target.startswith(f"{PRIMARY}-rb-") and explicit.target != PRIMARY
    assert explicit.instance_class == aws.DB_INSTANCE_CLASS
    assert explicit.subnet_group and explicit.parameter_group and explicit.security_group_ids


@pytest.mark.parametrize(
    ("confirm", "message"),
    [(None, "confirm is empty"), (N.db_replica_identifier, "does not match the DB instance identifier")],
)
def test_missing_or_wrong_confirm_is_refused(clients, unchanged, confirm, message):
    with pytest.raises(RollbackRefused, match=message):
        request(clients["rds"], confirm=confirm)


def test_unknown_environment_is_refused(clients, unchanged):
    with pytest.raises(RollbackRefused, match="unknown environment 'qa'"):
        request(clients["rds"], environment="qa")


def test_snapshot_that_does_not_exist_is_refused(clients, unchanged):
    with pytest.raises(RollbackRefused, match="snapshot 'no-such-snapshot' does not exist"):
        request(clients["rds"], snapshot_identifier="no-such-snapshot")


def test_snapshot_of_another_instance_is_refused(clients, snapshots, unchanged):
    with pytest.raises(
        RollbackRefused, match=f"belongs to instance '{N.db_replica_identifier}', not '{PRIMARY}'"
    ):
        request(clients["rds"], snapshot_identifier=snapshots["other"])


def test_snapshot_still_creating_is_refused_and_nothing_is_created():
    # moto's snapshots are available at once; its in-process backend lets us hold one in "creating".
    with mock_aws():
        rds = boto3.client("rds", region_name="us-east-1")
        rds.create_db_instance(
            DBInstanceIdentifier=PRIMARY,
            Engine="postgres",
            DBInstanceClass="db.t3.micro",
            MasterUsername="u",
            MasterUserPassword="password1",
            AllocatedStorage=20,
        )
        rds.create_db_snapshot(DBSnapshotIdentifier="snap-creating", DBInstanceIdentifier=PRIMARY)
        snapshots_before = rds.describe_db_snapshots()["DBSnapshots"]
        from moto.rds.models import rds_backends

        rds_backends["123456789012"]["us-east-1"].database_snapshots["snap-creating"].status = "creating"
        with pytest.raises(RollbackRefused, match="snapshot snap-creating is 'creating', not 'available'"):
            request(rds, snapshot_identifier="snap-creating")
        assert [i["DBInstanceIdentifier"] for i in rds.describe_db_instances()["DBInstances"]] == [PRIMARY]
        assert len(rds.describe_db_snapshots()["DBSnapshots"]) == len(snapshots_before)


@pytest.mark.parametrize("target", [PRIMARY, PRIMARY.upper()])
def test_target_equal_to_the_live_instance_is_refused(clients, unchanged, target):
    with pytest.raises(RollbackRefused, match="is the live instance's name"):
        request(clients["rds"], target_instance_identifier=target)


def test_target_that_already_exists_is_refused(clients, unchanged):
    with pytest.raises(RollbackRefused, match=f"'{N.db_replica_identifier}' already exists"):
        request(clients["rds"], target_instance_identifier=N.db_replica_identifier)


def test_switch_without_pgbouncer_configuration_is_refused_before_any_change(clients, unchanged):
    with pytest.raises(RollbackRefused, match="BISMAN_PGBOUNCER_INI is not set"):
        request(clients["rds"], switch_traffic=True)


def test_restore_creates_a_new_instance_like_the_original_and_leaves_it_untouched(ctx, clients, snapshots):
    rds = clients["rds"]
    before = db.describe_instance(rds, PRIMARY)
    plan = request(rds, snapshot_identifier=snapshots["mine"])
    assert db.take_pre_rollback_snapshot(rds, plan) == "available"
    assert db.take_pre_rollback_snapshot(rds, plan) == "available"  # a retry takes no second one
    db.restore(rds, plan, RUN_ID)
    db.restore(rds, plan, RUN_ID)  # idempotent for the same run
    assert db.instance_progress(rds, plan.target)[0]
    rows = db.restored_settings(rds, plan)
    assert all(original == restored for _, original, restored in rows)
    after = db.describe_instance(rds, PRIMARY)
    for key in ("DBInstanceStatus", "DBInstanceClass", "Endpoint", "VpcSecurityGroups", "DBParameterGroups"):
        assert after[key] == before[key]
    with pytest.raises(RollbackFailed, match="was not restored by this run"):
        db.restore(rds, plan, "another-run")
    host, port, how = db.sql_endpoint(
        rds, plan.target, {db.ENDPOINT_OVERRIDE_ENV: f"127.0.0.1:{ctx.port('postgres_primary')}"}
    )
    assert "stands in" in how
    seen = db.verify_restored(host, port, "bisman_staging", "bisman_app", aws.context.DB_PASSWORD)
    assert seen["tables"] == len(db.APPLICATION_TABLES)


def test_restored_database_without_the_application_tables_fails_verification(ctx):
    with pytest.raises(RollbackFailed, match="lacks application tables tenants, plan_quotas"):
        db.verify_restored(
            "127.0.0.1", ctx.port("postgres_primary"), "postgres", "bisman_app", aws.context.DB_PASSWORD
        )


def test_restored_database_that_does_not_answer_fails_verification():
    with pytest.raises(RollbackFailed, match="does not answer SQL"):
        db.verify_restored("127.0.0.1", 1, "bisman_staging", "bisman_app", "x")


def test_secret_url_naming_the_instance_is_repointed_and_a_pgbouncer_url_is_left(clients):
    sm = clients["secretsmanager"]
    plan = db.DatabaseRollbackPlan(
        environment="staging",
        instance=PRIMARY,
        snapshot="s",
        snapshot_time="t",
        data_loss_seconds=0,
        target="restored",
        pre_rollback_snapshot="p",
        instance_class="c",
        subnet_group=None,
        security_group_ids=[],
        parameter_group=None,
        port=5432,
        multi_az=False,
        storage_type=None,
        switch_traffic=True,
        live_address="live.rds.example",
    )
    name = f"rollback-test-{uuid.uuid4().hex[:6]}"
    sm.create_secret(
        Name=name, SecretString=json.dumps({"DATABASE_URL": "postgresql://u:pw@live.rds.example:5432/b"})
    )
    done = db.switch_secret(sm, name, plan, "restored.rds.example")
    assert "pw" not in json.dumps(done)
    value = json.loads(sm.get_secret_value(SecretId=name)["SecretString"])
    assert value["DATABASE_URL"] == "postgresql://u:pw@restored.rds.example:5432/b"
    previous = json.loads(sm.get_secret_value(SecretId=name, VersionStage="AWSPREVIOUS")["SecretString"])
    assert previous["DATABASE_URL"].startswith("postgresql://u:pw@live.rds.example")
    sm.put_secret_value(
        SecretId=name, SecretString=json.dumps({"DATABASE_URL": "postgresql://u:pw@pgb:6432/b"})
    )
    assert "unchanged" in db.switch_secret(sm, name, plan, "restored.rds.example")["DATABASE_URL host"]


def test_pgbouncer_ini_entry_is_repointed_and_others_kept():
    text = (
        "[databases]\napp = host=10.0.0.1 port=5432 dbname=app\n"
        "app_ro = host=10.0.0.2 port=5432\n[pgbouncer]\n"
    )
    new, previous = db.repoint_pgbouncer_ini(text, "app", "10.9.9.9", 6543, "restored x")
    assert previous == "host=10.0.0.1 port=5432 dbname=app"
    assert "app = host=10.9.9.9 port=6543 dbname=app ; restored x" in new
    assert "app_ro = host=10.0.0.2 port=5432" in new
    with pytest.raises(RollbackFailed, match="no \\[databases\\] entry 'nope'"):
        db.repoint_pgbouncer_ini(text, "nope", "h", 1, "")


def test_pgbouncer_switch_keeps_serving_queries(ctx):
    ini = pgbouncer.folder(ctx) / "pgbouncer.ini"
    original = ini.read_text()
    admin = pgbouncer.dsn(ctx, "admin")
    try:
        done = db.switch_pgbouncer(
            admin, str(ini), pgbouncer.RW_DB, "127.0.0.1", ctx.port("postgres_primary"), "test switch"
        )
        assert done["pgbouncer now"] == f"127.0.0.1:{ctx.port('postgres_primary')}"
        assert "; test switch" in ini.read_text()
        with psycopg.connect(pgbouncer.dsn(ctx, "rw"), prepare_threshold=None, connect_timeout=5) as conn:
            assert conn.execute("SELECT count(*) FROM tenants").fetchone()[0] >= 0
    finally:
        ini.write_text(original)
    with psycopg.connect(primary_dsn(ctx), connect_timeout=5) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_data_loss_reads_in_days_hours_and_minutes():
    assert db.human_duration(90061) == "1 d 1 h 1 min"
    assert db.human_duration(59) == "0 min"
