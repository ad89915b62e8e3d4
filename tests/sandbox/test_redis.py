"""Redis primary + replica + Sentinel, against the real processes."""

from __future__ import annotations

import uuid

import pytest
import redis as redis_py
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from bisman_ops import config
from bisman_sandbox import redis
from bisman_sandbox.context import HOST, REDIS_MASTER_NAME, SandboxContext
from bisman_sandbox.process import pid_alive, port_open, read_pid, stop_process, wait_until

pytestmark = [pytest.mark.sandbox, pytest.mark.timeout(180)]

PROCESSES = ("redis-primary", "redis-replica", "redis-sentinel")
PORTS = ("redis_primary", "redis_replica", "redis_sentinel")


@pytest.fixture(scope="module")
def ctx() -> SandboxContext:
    c = SandboxContext.from_env()
    redis.up(c)
    return c


def direct(port: int, password: str | None = redis.REDIS_PASSWORD) -> redis_py.Redis:
    # No retries: a refused AUTH is a ConnectionError that redis-py would otherwise retry.
    return redis_py.Redis(host=HOST, port=port, password=password, socket_timeout=2,
                          socket_connect_timeout=2, decode_responses=True, retry=Retry(NoBackoff(), 0))


def replica_port(ctx) -> int:
    _, master = redis.master_address(ctx)
    (other,) = [ctx.port(p) for p in ("redis_primary", "redis_replica") if ctx.port(p) != master]
    return other


def assert_master_replicates(ctx) -> None:
    key, value = f"test:{uuid.uuid4().hex}", "replicated"
    redis.client(ctx).set(key, value)
    with direct(replica_port(ctx)) as replica:
        wait_until(lambda: replica.get(key) == value, timeout=10, what="the write on the replica")
        with pytest.raises(redis_py.exceptions.ReadOnlyError):
            replica.set(key, "written on a replica")


def test_write_on_master_is_readable_on_replica(ctx):
    assert_master_replicates(ctx)


def test_instances_refuse_clients_without_the_password(ctx):
    for port in (ctx.port("redis_primary"), ctx.port("redis_replica")):
        with direct(port, password=None) as anonymous, pytest.raises(redis_py.exceptions.AuthenticationError):
            anonymous.ping()


def test_instances_keep_their_files_in_the_state_dir_and_do_not_snapshot(ctx):
    for port in (ctx.port("redis_primary"), ctx.port("redis_replica")):
        with direct(port) as conn:
            assert conn.config_get("dir")["dir"].startswith(str(ctx.state_dir))
            assert conn.config_get("save")["save"] == ""
            assert conn.config_get("appendonly")["appendonly"] == "no"


def test_connection_finds_the_master_through_the_sentinel_it_names(ctx):
    conn = redis.connections(ctx)[config.REDIS_CONN_ID]
    assert conn["conn_type"] == "redis"
    assert conn["port"] == ctx.port("redis_sentinel")
    assert conn["extra"]["master_name"] == REDIS_MASTER_NAME
    sentinel = Sentinel([tuple(s) for s in conn["extra"]["sentinels"]], socket_timeout=2)
    master = sentinel.master_for(conn["extra"]["master_name"], password=conn["password"],
                                 socket_timeout=2, decode_responses=True)
    assert master.ping()
    assert sentinel.discover_master(REDIS_MASTER_NAME) == redis.master_address(ctx)


def test_sentinel_failover_moves_the_master_and_the_client_keeps_working(ctx):
    client = redis.client(ctx)
    key = f"test:{uuid.uuid4().hex}"
    client.set(key, "before")

    old, new = redis.failover(ctx, timeout=60)

    assert new != old
    assert redis.master_address(ctx) == new
    with direct(old[1]) as old_master:
        assert old_master.role()[0] == "slave"
    # The same client object, opened before the failover, follows Sentinel to the new master.
    assert client.get(key) == "before"
    client.set(key, "after")
    with direct(new[1]) as new_master:
        assert new_master.get(key) == "after"


def test_up_after_a_failover_keeps_the_processes_and_the_current_master(ctx):
    redis.failover(ctx, timeout=60)
    master = redis.master_address(ctx)
    pids = [read_pid(ctx, name) for name in PROCESSES]

    redis.up(ctx)

    assert [read_pid(ctx, name) for name in PROCESSES] == pids
    assert redis.master_address(ctx) == master
    assert redis.healthy(ctx)


def test_up_restarts_a_stopped_replica_as_a_replica_of_the_current_master(ctx):
    _, master = redis.master_address(ctx)
    (name,) = [n for n, p in redis.INSTANCES.items() if ctx.port(p) != master]
    stop_process(ctx, name)

    redis.up(ctx)

    assert redis.master_address(ctx)[1] == master
    with direct(replica_port(ctx)) as replica:
        role = replica.role()
    assert (role[0], role[2]) == ("slave", master)
    assert_master_replicates(ctx)


def test_down_stops_all_three_and_up_brings_back_a_replicated_pair(ctx):
    pids = [read_pid(ctx, name) for name in PROCESSES]
    redis.down(ctx)
    try:
        assert not redis.healthy(ctx)
        assert not any(pid_alive(pid) for pid in pids)
        assert not any(port_open(ctx.port(p)) for p in PORTS)
    finally:
        redis.up(ctx)
    assert redis.healthy(ctx)
    assert_master_replicates(ctx)
