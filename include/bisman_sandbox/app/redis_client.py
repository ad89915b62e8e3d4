"""Redis through Sentinel: the client follows the current master.

redis-py asks Sentinel for the master when it opens a connection; after a failover the old
pooled connections fail (ConnectionError, or ReadOnlyError from a demoted master), so on those we
drop the pool's connections and try once more against the master Sentinel names now.
"""

from __future__ import annotations

import threading

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from bisman_sandbox.app.settings import Settings

_RETRYABLE = (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError)
_lock = threading.Lock()
_clients: dict[int, redis.Redis] = {}


def master(settings: Settings) -> redis.Redis:
    """This worker's client for the master (created after fork, never shared across processes)."""
    key = id(settings)
    with _lock:
        client = _clients.get(key)
        if client is None:
            sentinel = Sentinel(
                list(settings.redis_sentinels),
                socket_timeout=settings.redis_timeout,
                socket_connect_timeout=settings.redis_timeout,
                sentinel_kwargs={
                    "socket_timeout": settings.redis_timeout,
                    "socket_connect_timeout": settings.redis_timeout,
                    "password": settings.redis_sentinel_password,
                    "retry": Retry(NoBackoff(), 0),
                },
            )
            client = sentinel.master_for(
                settings.redis_master_name,
                password=settings.redis_password,
                socket_timeout=settings.redis_timeout,
                socket_connect_timeout=settings.redis_timeout,
                # redis-py retries 3 times with backoff by default; we fail fast and retry once ourselves.
                retry=Retry(NoBackoff(), 0),
            )
            _clients[key] = client
        return client


def ping(settings: Settings) -> str:
    """PING the current master; return its address ``host:port``. Raises redis errors on failure."""
    client = master(settings)
    try:
        client.ping()
    except _RETRYABLE:
        client.connection_pool.disconnect()
        client.connection_pool.reset()
        client.ping()
    host, port = client.connection_pool.get_master_address()
    return f"{host}:{port}"
