"""Connections to PostgreSQL through PgBouncer: the read-write pool (primary) and the read-only
pool (replica).

PgBouncer runs in transaction mode, so every request opens a short client connection (cheap: it
is local to PgBouncer) with server-side prepared statements off (``prepare_threshold=None``).
A watchdog cancels a statement that outlives the query timeout, so a request never hangs on a
server that stopped answering.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg.rows import dict_row

from bisman_sandbox.app.settings import Settings

# "This node is unreachable or unusable" (refused, shut down, cancelled by the watchdog), as opposed
# to a bug in our SQL. AdminShutdown, CannotConnectNow and QueryCanceled are subclasses.
UNAVAILABLE = psycopg.OperationalError


@contextmanager
def connect(settings: Settings, *, replica: bool = False) -> Iterator[psycopg.Connection]:
    url = settings.database_url_replica if replica else settings.database_url
    conn = psycopg.connect(
        url,
        connect_timeout=settings.db_connect_timeout,
        prepare_threshold=None,
        autocommit=True,
        row_factory=dict_row,
        application_name="bisman-erp-sandbox-app",
    )
    # cancel_safe goes through PgBouncer's cancel path; the caller sees QueryCanceled (an OperationalError).
    watchdog = threading.Timer(settings.db_query_timeout, _cancel, args=(conn,))
    watchdog.daemon = True
    watchdog.start()
    try:
        yield conn
    finally:
        watchdog.cancel()
        conn.close()


def _cancel(conn: psycopg.Connection) -> None:
    try:
        conn.cancel_safe(timeout=1.0)
    except Exception:
        pass


def ping(settings: Settings, *, replica: bool = False) -> None:
    """SELECT 1 on the pool; raises on failure."""
    with connect(settings, replica=replica) as conn:
        conn.execute("SELECT 1").fetchone()
