"""PgBouncer in front of the sandbox primary and replica, against the real processes."""

from __future__ import annotations

import stat
import threading
import time

import psycopg
import pytest
from psycopg.rows import dict_row

from bisman_ops import config
from bisman_ops.clients import pgbouncer as pgbouncer_admin
from bisman_sandbox import context, pgbouncer, postgres
from bisman_sandbox.context import SandboxContext
from bisman_sandbox.process import port_open, read_pid, wait_until

pytestmark = [pytest.mark.sandbox, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def ctx() -> SandboxContext:
    c = SandboxContext.from_env()
    postgres.up(c)
    pgbouncer.up(c)
    return c


def connect(dsn: str) -> psycopg.Connection:
    # PgBouncer 1.18 in transaction mode cannot keep protocol-level prepared statements.
    return psycopg.connect(dsn, autocommit=True, prepare_threshold=None)


def pool(ctx, database: str) -> dict:
    with admin(ctx) as conn:
        (row,) = [p for p in pgbouncer_admin.pool_stats(conn) if p["database"] == database]
    return row


def admin(ctx) -> psycopg.Connection:
    return psycopg.connect(pgbouncer.dsn(ctx, "admin"), autocommit=True, prepare_threshold=None,
                           row_factory=dict_row)


def ro_pool_answers(ctx) -> bool:
    with connect(pgbouncer.dsn(ctx, "ro")) as conn:
        return conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]


def test_rw_pool_reaches_the_primary_and_ro_pool_the_replica(ctx):
    with connect(pgbouncer.dsn(ctx, "rw")) as conn:
        assert conn.execute("SELECT pg_is_in_recovery(), current_database()").fetchone() == (
            False,
            context.DB_NAME,
        )
    with connect(pgbouncer.dsn(ctx, "ro")) as conn:
        assert conn.execute("SELECT pg_is_in_recovery(), current_database()").fetchone() == (
            True,
            context.DB_NAME,
        )


def test_fifty_concurrent_clients_share_at_most_default_pool_size_server_connections(ctx):
    clients = 50
    barrier = threading.Barrier(clients)
    errors: list[BaseException] = []
    done = threading.Event()
    samples: list[dict] = []

    def client() -> None:
        try:
            with connect(pgbouncer.dsn(ctx, "rw")) as conn:
                barrier.wait(timeout=30)  # all 50 connected at once before any query
                for _ in range(2):
                    conn.execute("SELECT pg_sleep(0.2)")
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    def sample() -> None:
        while not done.is_set():
            samples.append(pool(ctx, pgbouncer.RW_DB))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample)
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    sampler.start()
    for t in threads:
        t.join(timeout=60)
    done.set()
    sampler.join(timeout=10)

    assert errors == []
    assert max(s["cl_active"] + s["cl_waiting"] for s in samples) > pgbouncer.DEFAULT_POOL_SIZE * 2
    assert max(len(s["servers"]) for s in samples) <= pgbouncer.DEFAULT_POOL_SIZE
    assert max(s["sv_active"] + s["sv_idle"] + s["sv_used"] + s["sv_login"] for s in samples) <= (
        pgbouncer.DEFAULT_POOL_SIZE
    )
    assert max(s["cl_waiting"] for s in samples) > 0, "clients should have queued for a server"


def test_ro_pool_fails_while_replica_is_down_and_rw_pool_keeps_working(ctx):
    # How fast it fails is PgBouncer's query_wait_timeout; bench/sandbox.py measures it.
    postgres.stop_replica(ctx)
    try:
        with pytest.raises(psycopg.Error), connect(pgbouncer.dsn(ctx, "ro")) as conn:
            conn.execute("SELECT 1")
        with connect(pgbouncer.dsn(ctx, "rw")) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        postgres.start_replica(ctx)
    # PgBouncer retries the replica after server_login_retry.
    wait_until(lambda: ro_pool_answers(ctx), timeout=10, what="ro pool back on the replica")


def test_admin_console_show_pools_lists_both_pools_in_transaction_mode(ctx):
    with admin(ctx) as conn:
        pools = {p["database"]: p for p in pgbouncer_admin.show(conn, "POOLS")}
    assert pools[pgbouncer.RW_DB]["pool_mode"] == "transaction"
    assert pools[pgbouncer.RO_DB]["pool_mode"] == "transaction"


def test_pool_stats_attaches_each_pools_server_connections(ctx):
    with connect(pgbouncer.dsn(ctx, "ro")) as conn:
        conn.execute("SELECT 1")
    ro = pool(ctx, pgbouncer.RO_DB)
    assert ro["servers"], "a query on the ro pool leaves a server connection"
    assert {s["port"] for s in ro["servers"]} == {ctx.port("postgres_replica")}


def test_wrong_password_is_refused(ctx):
    wrong = pgbouncer.dsn(ctx, "rw").replace(context.DB_PASSWORD, "wrong-password")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(wrong)


def test_userlist_is_private_and_holds_no_password(ctx):
    userlist = pgbouncer.folder(ctx) / "userlist.txt"
    assert stat.S_IMODE(userlist.stat().st_mode) == 0o600
    text = userlist.read_text()
    assert context.DB_PASSWORD not in text and pgbouncer.ADMIN_PASSWORD not in text
    assert text.count("SCRAM-SHA-256$") == 2


def test_connections_use_the_pools_and_admin_console(ctx):
    conns = pgbouncer.connections(ctx)
    assert set(conns) == {config.APP_DB_CONN_ID, config.PGBOUNCER_ADMIN_CONN_ID}
    assert conns[config.PGBOUNCER_ADMIN_CONN_ID]["schema"] == "pgbouncer"
    c = conns[config.APP_DB_CONN_ID]
    with psycopg.connect(
        host=c["host"],
        port=c["port"],
        user=c["login"],
        password=c["password"],
        dbname=c["schema"],
        prepare_threshold=None,
        **c["extra"],
    ) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is False


def test_up_twice_is_a_no_op(ctx):
    pid = read_pid(ctx, "pgbouncer")
    pgbouncer.up(ctx)
    assert read_pid(ctx, "pgbouncer") == pid


def test_down_then_up_serves_again(ctx):
    pgbouncer.down(ctx)
    assert not port_open(ctx.port("pgbouncer"))
    assert not pgbouncer.healthy(ctx)
    pgbouncer.down(ctx)  # already down: nothing to do, no error

    pgbouncer.up(ctx)

    assert pgbouncer.healthy(ctx)
    with connect(pgbouncer.dsn(ctx, "rw")) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
