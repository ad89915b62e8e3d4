"""PgBouncer's admin console (database ``pgbouncer``) through the one PostgreSQL connector.

The console speaks only the simple query protocol (the connector never prepares) and takes no
bind parameters, so a database name is checked to be a plain identifier before it is sent.
``pause`` is bounded: PgBouncer's PAUSE waits for every running transaction of the pool, which a
long job can hold for minutes while every client queues; past ``timeout_s`` it is taken back with
RESUME and reported.
"""

from __future__ import annotations

import re
import select
import time
from typing import Any

from psycopg.rows import dict_row

from bisman_ops import config
from bisman_ops.clients import postgres

SHOWABLE = ("POOLS", "SERVERS", "CLIENTS", "DATABASES", "STATS", "VERSION")
_PLAIN = re.compile(r"^[A-Za-z0-9_]+$")


class PauseTimedOut(RuntimeError):
    """PAUSE did not complete in time; the pool was resumed."""


def connect(conn_id: str = config.PGBOUNCER_ADMIN_CONN_ID) -> Any:
    return postgres.connect(conn_id, autocommit=True, row_factory=dict_row)


def plain(database: str) -> str:
    if not _PLAIN.match(database or ""):
        raise ValueError(f"PgBouncer database name {database!r} is not a plain identifier")
    return database


def show(conn: Any, what: str) -> list[dict]:
    """Rows of ``SHOW <what>`` as dicts (column names as PgBouncer gives them)."""
    what = what.upper()
    if what not in SHOWABLE:
        raise ValueError(f"SHOW {what} is not read here; expected one of {', '.join(SHOWABLE)}")
    return conn.execute(f"SHOW {what}").fetchall()


def database_entry(conn: Any, database: str) -> dict | None:
    """The ``SHOW DATABASES`` row of ``database`` (host, port, paused, ...), None if not listed."""
    return next((r for r in show(conn, "DATABASES") if r["name"] == database), None)


def pool_stats(conn: Any) -> list[dict]:
    """One dict per pool (SHOW POOLS) plus ``servers`` and ``clients``: that pool's rows of SHOW
    SERVERS and SHOW CLIENTS."""
    pools, servers, clients = show(conn, "POOLS"), show(conn, "SERVERS"), show(conn, "CLIENTS")
    for pool in pools:
        key = (pool["database"], pool["user"])
        pool["servers"] = [s for s in servers if (s["database"], s["user"]) == key]
        pool["clients"] = [c for c in clients if (c["database"], c["user"]) == key]
    return pools


def command(conn: Any, verb: str, database: str | None = None) -> None:
    """RELOAD, RESUME <db>, RECONNECT <db>, ... (never PAUSE: see ``pause``)."""
    verb = verb.upper()
    if verb == "PAUSE":
        raise ValueError("PAUSE is bounded: call pause(conn_id, database, timeout_s)")
    conn.execute(f"{verb} {plain(database)}" if database else verb)


def pause(conn_id: str, database: str, timeout_s: float) -> float:
    """PAUSE ``database`` and wait at most ``timeout_s`` for its transactions to finish; returns
    the seconds it took. Past the timeout: RESUME (clients go on as before) and PauseTimedOut."""
    conn = connect(conn_id)
    started = time.monotonic()
    try:
        pg = conn.pgconn
        pg.send_query(f"PAUSE {plain(database)}".encode())
        while True:
            pg.consume_input()
            if not pg.is_busy():
                break
            left = timeout_s - (time.monotonic() - started)
            if left <= 0:
                break
            select.select([pg.socket], [], [], min(left, 0.5))
        if pg.is_busy():
            with connect(conn_id) as other:
                resume_if_paused(other, database)
            raise PauseTimedOut(f"PAUSE {database} waited {timeout_s:g} s for running transactions; resumed")
        result = pg.get_result()
        while pg.get_result() is not None:
            pass
        if result is not None and result.error_message:
            raise RuntimeError(f"PAUSE {database}: {result.error_message.decode(errors='replace').strip()}")
    finally:
        conn.close()
    return time.monotonic() - started


def resume_if_paused(conn: Any, database: str) -> bool:
    """RESUME ``database`` when PgBouncer says it is paused; True when it resumed it."""
    entry = database_entry(conn, plain(database))
    if entry is None or not int(entry.get("paused") or 0):
        return False
    conn.execute(f"RESUME {database}")
    return True
