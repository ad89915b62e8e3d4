"""The sandbox PostgreSQL primary and streaming replica, against the real processes."""

from __future__ import annotations

import os
import signal
import uuid

import psycopg
import pytest

from bisman_ops import config, migrations
from bisman_sandbox import context, postgres
from bisman_sandbox.context import SandboxContext
from bisman_sandbox.process import port_open, read_pid, wait_until

pytestmark = [pytest.mark.sandbox, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def ctx() -> SandboxContext:
    c = SandboxContext.from_env()
    postgres.up(c)
    return c


@pytest.fixture
def replica_restored(ctx):
    """Tests that take the replica down leave it streaming again."""
    yield
    if not postgres.healthy(ctx):
        postgres.start_replica(ctx)


def query(dsn: str, sql: str, params=()):
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def insert_event(ctx) -> str:
    key = f"test-{uuid.uuid4()}"
    query(
        postgres.dsn(ctx, "primary"),
        "INSERT INTO events (type, dedup_key) VALUES ('sandbox.test', %s) RETURNING id",
        (key,),
    )
    return key


def visible_on_replica(ctx, key: str) -> bool:
    return bool(query(postgres.dsn(ctx, "replica"), "SELECT 1 FROM events WHERE dedup_key = %s", (key,)))


def test_primary_accepts_writes_and_replica_is_a_hot_standby(ctx):
    assert query(postgres.dsn(ctx, "primary"), "SELECT pg_is_in_recovery(), current_user") == [
        (False, context.DB_USER)
    ]
    assert query(postgres.dsn(ctx, "replica"), "SELECT pg_is_in_recovery()") == [(True,)]
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        query(postgres.dsn(ctx, "replica"), "INSERT INTO events (type) VALUES ('sandbox.test')")


def test_servers_listen_on_loopback_only(ctx):
    for which in postgres.INSTANCES:
        rows = query(postgres.superuser_dsn(ctx, which), "SHOW listen_addresses")
        assert rows == [("127.0.0.1",)]


def test_tcp_login_needs_the_password(ctx):
    wrong = postgres.dsn(ctx, "primary").replace(context.DB_PASSWORD, "wrong-password")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(wrong)


def test_row_written_on_primary_appears_on_replica_and_lag_is_measured(ctx):
    # How small the lag is belongs to bench/sandbox.py, not to a pass/fail check.
    key = insert_event(ctx)
    wait_until(lambda: visible_on_replica(ctx, key), timeout=5, what="event row on the replica")

    lag = postgres.replica_lag_seconds(ctx)

    # Caught up (the row is there) and idle since: what is left is bounded by the write just made.
    assert isinstance(lag, float) and 0.0 <= lag < 5.0


def test_lag_does_not_count_the_time_the_primary_was_idle(ctx):
    # The naive measurement (age of the last replayed commit) grows while the primary is idle;
    # the sandbox's commits first, so its result stays below the naive one taken just before.
    insert_event(ctx)
    postgres.wait_for_replica_catch_up(ctx)
    with psycopg.connect(postgres.superuser_dsn(ctx, "replica"), autocommit=True) as replica:
        wait_until(lambda: replica.execute(
            "SELECT extract(epoch FROM now() - pg_last_xact_replay_timestamp()) > 0.5").fetchone()[0],
            timeout=10, what="the last replayed commit to age")
        naive = replica.execute("SELECT extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8"
                                ).fetchone()[0]
    assert postgres.replica_lag_seconds(ctx) < naive


def test_stop_and_start_replica_round_trip_catches_up_on_writes_made_meanwhile(ctx, replica_restored):
    postgres.stop_replica(ctx)
    assert not port_open(ctx.port("postgres_replica"))
    assert not postgres.healthy(ctx)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(postgres.dsn(ctx, "replica"))
    key = insert_event(ctx)

    postgres.start_replica(ctx)

    assert postgres.healthy(ctx)
    wait_until(
        lambda: visible_on_replica(ctx, key), timeout=10, what="event written while the replica was down"
    )


def test_replica_lag_raises_sandbox_error_when_replica_is_down(ctx, replica_restored):
    postgres.stop_replica(ctx)
    with pytest.raises(postgres.SandboxError, match="replica"):
        postgres.replica_lag_seconds(ctx)


def test_up_twice_is_a_no_op(ctx):
    pids = {w: read_pid(ctx, f"postgres_{w}") for w in postgres.INSTANCES}
    applied = migrations.applied_versions(postgres.dsn(ctx, "primary"))

    postgres.up(ctx)

    assert {w: read_pid(ctx, f"postgres_{w}") for w in postgres.INSTANCES} == pids
    assert migrations.applied_versions(postgres.dsn(ctx, "primary")) == applied


def test_up_restarts_a_crashed_replica(ctx, replica_restored):
    postmaster = int((postgres.data_dir(ctx, "replica") / "postmaster.pid").read_text().split()[0])
    os.kill(postmaster, signal.SIGKILL)
    wait_until(lambda: not postgres.healthy(ctx), timeout=10, what="replica seen as down")

    postgres.up(ctx)

    assert postgres.healthy(ctx)


def test_down_then_up_keeps_the_data(ctx):
    key = insert_event(ctx)

    postgres.down(ctx)
    assert not port_open(ctx.port("postgres_primary"))
    assert not port_open(ctx.port("postgres_replica"))
    assert read_pid(ctx, "postgres_primary") is None
    postgres.down(ctx)  # already down: nothing to do, no error

    postgres.up(ctx)

    assert postgres.healthy(ctx)
    assert query(
        postgres.dsn(ctx, "primary"), "SELECT count(*) FROM events WHERE dedup_key = %s", (key,)
    ) == [(1,)]


@pytest.fixture
def fresh_seeded_db(ctx):
    """The migrations and the seed in a database of their own: what the seed gives a new sandbox,
    whatever the DAGs rehearsed here have since done to the tenants (a trial expired, say)."""
    name = f"seed_check_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres.superuser_dsn(ctx), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" OWNER "{context.DB_USER}"')
    try:
        dsn = postgres.dsn(ctx, "primary", dbname=name)
        migrations.migrate(dsn)
        with psycopg.connect(dsn) as conn:
            conn.execute(postgres.SEED_FILE.read_text(encoding="utf-8"))
        yield dsn
    finally:
        with psycopg.connect(postgres.superuser_dsn(ctx), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_seed_covers_every_plan_and_status_with_trials_ending_before_and_after_now(fresh_seeded_db):
    rows = query(
        fresh_seeded_db,
        "SELECT plan, status, trial_ends_at > now(), billing_email, stripe_customer_id FROM tenants",
    )
    assert {r[0] for r in rows} == {"free", "pro", "enterprise"}
    assert {r[1] for r in rows} == {"trialing", "active", "past_due", "canceled"}
    assert {r[2] for r in rows if r[1] == "trialing"} == {True, False}
    assert all(r[3].endswith("@tenants.bisman.test") and r[4].startswith("cus_sandbox_") for r in rows)


def test_seed_plan_quotas_cover_the_metrics_with_unlimited_enterprise_limits(ctx):
    rows = query(postgres.dsn(ctx, "primary"), "SELECT plan, metric, period, quota FROM plan_quotas")
    keys = {(m, p) for _, m, p, _ in rows}
    assert {
        ("api_calls", "day"),
        ("api_calls", "month"),
        ("storage_mb", "month"),
        ("active_users", "month"),
        ("invoices_created", "month"),
    } <= keys
    for plan in ("free", "pro", "enterprise"):
        assert {(m, p) for pl, m, p, _ in rows if pl == plan} == keys
    assert any(q is None for pl, _, _, q in rows if pl == "enterprise")
    assert all(q is not None for pl, _, _, q in rows if pl != "enterprise")


def test_seed_has_overrides_and_yesterdays_usage(ctx):
    dsn = postgres.dsn(ctx, "primary")
    assert query(dsn, "SELECT count(*) FROM tenant_quotas")[0][0] >= 2
    yesterday = query(
        dsn,
        "SELECT count(DISTINCT tenant_id) FROM client_daily_usage"
        " WHERE usage_date = (now() AT TIME ZONE 'UTC')::date - 1",
    )[0][0]
    assert yesterday >= 5


def test_seed_rerun_changes_nothing(ctx):
    dsn = postgres.dsn(ctx, "primary")
    snapshot = (
        "SELECT (SELECT count(*) FROM tenants), (SELECT count(*) FROM plan_quotas),"
        " (SELECT count(*) FROM tenant_quotas), (SELECT count(*) FROM client_daily_usage),"
        " (SELECT max(updated_at) FROM tenants)"
    )
    before = query(dsn, snapshot)

    postgres._seed(ctx)

    assert query(dsn, snapshot) == before


def test_connections_reach_primary_and_replica(ctx):
    conns = postgres.connections(ctx)
    assert set(conns) == {config.APP_DB_PRIMARY_CONN_ID, config.APP_DB_REPLICA_CONN_ID}
    for conn_id, in_recovery in (
        (config.APP_DB_PRIMARY_CONN_ID, False),
        (config.APP_DB_REPLICA_CONN_ID, True),
    ):
        c = conns[conn_id]
        assert c["conn_type"] == "postgres"
        with psycopg.connect(
            host=c["host"],
            port=c["port"],
            user=c["login"],
            password=c["password"],
            dbname=c["schema"],
            **c["extra"],
        ) as conn:
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is in_recovery


def test_data_folders_belong_to_postgres_and_are_private(ctx):
    import pwd

    uid = pwd.getpwnam("postgres").pw_uid
    for d in (postgres.data_dir(ctx, "primary"), postgres.data_dir(ctx, "replica"), postgres.socket_dir(ctx)):
        st = d.stat()
        assert st.st_uid == uid
        assert st.st_mode & 0o077 == 0
