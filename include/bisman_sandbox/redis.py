"""Redis primary + replica watched by one Sentinel, the sandbox's stand-in for ElastiCache.

The application and the DAGs find the master through Sentinel, so a failover drill
(``failover``) really moves the master while clients keep working. Nothing is persisted:
``save ""`` and no AOF, and each instance's working dir is inside the state folder.

Which instance is master survives a failover, so ``up`` asks the running instances before it
writes configs: a restarted instance rejoins whoever is master now instead of claiming the role.
"""

from __future__ import annotations

import redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry
from redis.sentinel import Sentinel

from bisman_ops import config
from bisman_sandbox.context import HOST, REDIS_MASTER_NAME, SandboxContext
from bisman_sandbox.process import (
    SandboxError,
    is_running,
    start_process,
    stop_process,
    wait_for_port,
    wait_until,
)

REDIS_PASSWORD = "sandbox-redis-password-not-secret"

SOCKET_TIMEOUT = 2.0
DOWN_AFTER_MS = 2000
FAILOVER_TIMEOUT_MS = 10000
START_TIMEOUT = 20.0

# process name -> port name in SandboxContext
INSTANCES = {"redis-primary": "redis_primary", "redis-replica": "redis_replica"}
SENTINEL = "redis-sentinel"


def up(ctx: SandboxContext) -> dict[str, str]:
    if not all(is_running(ctx, name) for name in (*INSTANCES, SENTINEL)):
        master_port = _current_master_port(ctx) or ctx.port("redis_primary")
        for name, port_name in INSTANCES.items():
            if is_running(ctx, name):
                continue
            port = ctx.port(port_name)
            conf = _write_instance_conf(ctx, name, port, None if port == master_port else master_port)
            start_process(ctx, name, ["redis-server", str(conf)])
            wait_for_port(port, timeout=START_TIMEOUT, what=name)
        if not is_running(ctx, SENTINEL):
            conf = _write_sentinel_conf(ctx, master_port)
            start_process(ctx, SENTINEL, ["redis-sentinel", str(conf)])
            wait_for_port(ctx.port("redis_sentinel"), timeout=START_TIMEOUT, what=SENTINEL)
    # Sentinel refreshes replica INFO every 10 s, so a fresh or just-failed-over pair needs time.
    wait_until(
        lambda: healthy(ctx),
        timeout=30.0,
        what="Redis master with a linked replica known to Sentinel",
    )
    host, port = master_address(ctx)
    return {
        "redis sentinel": f"{HOST}:{ctx.port('redis_sentinel')} (master name {REDIS_MASTER_NAME})",
        "redis master": f"{host}:{port}",
    }


def down(ctx: SandboxContext) -> None:
    # Sentinel first, so it does not start a failover while the instances stop.
    stop_process(ctx, SENTINEL)
    for name in INSTANCES:
        stop_process(ctx, name)


def healthy(ctx: SandboxContext) -> bool:
    """Sentinel names a master that answers as master and has a replica Sentinel could promote."""
    if not all(is_running(ctx, name) for name in (*INSTANCES, SENTINEL)):
        return False
    try:
        _, port = master_address(ctx)
        return _role(port)[0] == "master" and _promotable_replicas(ctx) >= 1
    except (redis.RedisError, OSError, SandboxError):
        return False


def connections(ctx: SandboxContext) -> dict[str, dict]:
    sentinel_port = ctx.port("redis_sentinel")
    return {
        config.REDIS_CONN_ID: {
            "conn_type": "redis",
            "host": HOST,
            "port": sentinel_port,
            "password": REDIS_PASSWORD,
            "extra": {"sentinels": [[HOST, sentinel_port]], "master_name": REDIS_MASTER_NAME},
        }
    }


def master_address(ctx: SandboxContext) -> tuple[str, int]:
    """The master's address as Sentinel reports it."""
    reply = _sentinel_command(ctx, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", REDIS_MASTER_NAME)
    if not reply:
        raise SandboxError(f"Sentinel on {HOST}:{ctx.port('redis_sentinel')} knows no master "
                           f"named {REDIS_MASTER_NAME}")
    host, port = reply
    return _text(host), int(port)


def failover(ctx: SandboxContext, timeout: float = 30.0) -> tuple[tuple[str, int], tuple[str, int]]:
    """Run SENTINEL FAILOVER; return (old master, new master) once the new one is confirmed.

    Confirmed means: Sentinel names it and it answers ROLE as master with a replica attached.
    Sentinel demotes the old master on its next 10 s INFO round, so this takes ~11 s.
    """
    # Sentinel refuses (NOGOODSLAVE) until it has fresh INFO from a linked replica.
    wait_until(lambda: _promotable_replicas(ctx) >= 1, timeout=timeout,
               what="a replica Sentinel can promote")
    old = master_address(ctx)
    _sentinel_command(ctx, "SENTINEL", "FAILOVER", REDIS_MASTER_NAME)

    def switched() -> bool:
        new = master_address(ctx)
        if new == old:
            return False
        role = _role(new[1])
        return role[0] == "master" and len(role[2]) >= 1

    wait_until(switched, timeout=timeout, what=f"Redis failover away from {old[0]}:{old[1]}",
               interval=0.3)
    return old, master_address(ctx)


def settings(ctx: SandboxContext) -> dict[str, str]:
    """Phase 7's Redis drill fails over through Sentinel (moto has no ElastiCache test_failover)."""
    from bisman_ops.extension import env_var

    return {env_var("redis_failover"): "bisman_sandbox.chaos_impl:SandboxRedisFailover"}


def client(ctx: SandboxContext) -> redis.Redis:
    """A client bound to whichever instance Sentinel names master, re-asking after a failover."""
    sentinel = Sentinel(
        [(HOST, ctx.port("redis_sentinel"))],
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=SOCKET_TIMEOUT,
        sentinel_kwargs={"socket_timeout": SOCKET_TIMEOUT, "socket_connect_timeout": SOCKET_TIMEOUT},
    )
    return sentinel.master_for(
        REDIS_MASTER_NAME,
        password=REDIS_PASSWORD,
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=SOCKET_TIMEOUT,
        decode_responses=True,
        # A demoted master answers READONLY; redis-py turns that into a ConnectionError and
        # re-asks Sentinel, so a few spaced retries ride through the switch.
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.1), 6),
        retry_on_error=[RedisConnectionError, RedisTimeoutError, ReadOnlyError],
    )


def _write_instance_conf(ctx: SandboxContext, name: str, port: int, replica_of: int | None):
    workdir = ctx.path("redis", name, "data")
    workdir.mkdir(parents=True, exist_ok=True)
    lines = [
        f"port {port}",
        f"bind {HOST}",
        "protected-mode yes",
        "daemonize no",
        'logfile ""',
        f"dir {workdir}",
        'save ""',
        "appendonly no",
        # A diskless sync keeps the replica's initial RDB off the disk too.
        "repl-diskless-sync yes",
        "repl-diskless-sync-delay 0",
        f"requirepass {REDIS_PASSWORD}",
        # masterauth on both: after a failover the old primary replicates the new master.
        f"masterauth {REDIS_PASSWORD}",
    ]
    if replica_of is not None:
        lines.append(f"replicaof {HOST} {replica_of}")
    conf = ctx.path("redis", f"{name}.conf")
    conf.write_text("\n".join(lines) + "\n")
    return conf


def _write_sentinel_conf(ctx: SandboxContext, master_port: int):
    workdir = ctx.path("redis", SENTINEL, "data")
    workdir.mkdir(parents=True, exist_ok=True)
    name = REDIS_MASTER_NAME
    lines = [
        f"port {ctx.port('redis_sentinel')}",
        f"bind {HOST}",
        "protected-mode yes",
        "daemonize no",
        'logfile ""',
        f"dir {workdir}",
        f"sentinel monitor {name} {HOST} {master_port} 1",
        f"sentinel auth-pass {name} {REDIS_PASSWORD}",
        f"sentinel down-after-milliseconds {name} {DOWN_AFTER_MS}",
        f"sentinel failover-timeout {name} {FAILOVER_TIMEOUT_MS}",
        f"sentinel parallel-syncs {name} 1",
    ]
    # Sentinel rewrites this file as it learns; it is regenerated at every start.
    conf = ctx.path("redis", f"{SENTINEL}.conf")
    conf.write_text("\n".join(lines) + "\n")
    return conf


def _current_master_port(ctx: SandboxContext) -> int | None:
    """The port of a running instance that says it is master, if any."""
    for name, port_name in INSTANCES.items():
        if not is_running(ctx, name):
            continue
        try:
            if _role(ctx.port(port_name))[0] == "master":
                return ctx.port(port_name)
        except (redis.RedisError, OSError):
            continue
    return None


def _promotable_replicas(ctx: SandboxContext) -> int:
    replicas = _sentinel_command(ctx, "SENTINEL", "REPLICAS", REDIS_MASTER_NAME)
    count = 0
    for entry in replicas:
        # redis-py parses the reply into dicts; a bare flat list is the raw protocol form.
        info = entry if isinstance(entry, dict) else dict(zip(entry[::2], entry[1::2], strict=True))
        if info.get("flags") == "slave" and info.get("master-link-status") == "ok":
            count += 1
    return count


def _role(port: int) -> list:
    """ROLE of the instance on ``port``, asked directly: ["master", offset, [replicas]] or ["slave", ...]."""
    with redis.Redis(
        host=HOST,
        port=port,
        password=REDIS_PASSWORD,
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=SOCKET_TIMEOUT,
        decode_responses=True,
        retry=Retry(ExponentialBackoff(), 0),
    ) as conn:
        return conn.role()


def _sentinel_command(ctx: SandboxContext, *args: str):
    with redis.Redis(
        host=HOST,
        port=ctx.port("redis_sentinel"),
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=SOCKET_TIMEOUT,
        decode_responses=True,
        retry=Retry(ExponentialBackoff(), 0),
    ) as conn:
        return conn.execute_command(*args)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
