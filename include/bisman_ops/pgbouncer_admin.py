"""Read PgBouncer's admin console: pools, and the server and client connections of each.

The console (database ``pgbouncer``) speaks only the simple query protocol, so connect with
autocommit and ``prepare_threshold=None``; psycopg then sends a parameterless query as a simple
query.
"""

from __future__ import annotations

import psycopg
from psycopg.rows import dict_row

CONNECT_TIMEOUT_S = 5
_SHOWABLE = ("POOLS", "SERVERS", "CLIENTS", "DATABASES", "STATS", "VERSION")


def show(dsn_admin: str, what: str) -> list[dict]:
    """Rows of ``SHOW <what>`` as dicts (column names as PgBouncer gives them)."""
    with _connect(dsn_admin) as conn:
        return _show(conn, what)


def pool_stats(dsn_admin: str) -> list[dict]:
    """One dict per pool (SHOW POOLS columns: database, user, cl_active, cl_waiting, sv_active,
    sv_idle, ..., pool_mode) plus ``servers`` and ``clients``: that pool's rows of SHOW SERVERS
    and SHOW CLIENTS. The console's own connection appears as the ``pgbouncer`` pool."""
    with _connect(dsn_admin) as conn:
        pools = _show(conn, "POOLS")
        servers = _show(conn, "SERVERS")
        clients = _show(conn, "CLIENTS")
    for pool in pools:
        key = (pool["database"], pool["user"])
        pool["servers"] = [s for s in servers if (s["database"], s["user"]) == key]
        pool["clients"] = [c for c in clients if (c["database"], c["user"]) == key]
    return pools


def _connect(dsn_admin: str) -> psycopg.Connection:
    return psycopg.connect(
        dsn_admin,
        autocommit=True,
        prepare_threshold=None,
        connect_timeout=CONNECT_TIMEOUT_S,
        row_factory=dict_row,
    )


def _show(conn: psycopg.Connection, what: str) -> list[dict]:
    what = what.upper()
    if what not in _SHOWABLE:
        raise ValueError(f"SHOW {what} is not read here; expected one of {', '.join(_SHOWABLE)}")
    return conn.execute(f"SHOW {what}").fetchall()
