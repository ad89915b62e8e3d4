"""Connections to the application database for the recurring jobs, and their SQL files.

The jobs reach the database through PgBouncer in transaction mode: every unit of work is one
explicit transaction, nothing relies on session state between transactions, and psycopg's
server-side prepared statements are off (a prepared statement lives on one server connection,
which PgBouncer may hand to someone else at the next transaction).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

from bisman_ops import config

SQL_DIR = Path(__file__).resolve().parents[2] / "sql" / "recurring"
# A job's statements are set-based; one running longer than this is stuck, not slow.
STATEMENT_TIMEOUT = "15min"


@cache
def sql(name: str) -> str:
    """The text of ``include/sql/recurring/<name>.sql``."""
    return (SQL_DIR / f"{name}.sql").read_text(encoding="utf-8")


def connect_app(conn_id: str = config.APP_DB_CONN_ID, *,
                application_name: str = "bisman-ops") -> psycopg.Connection:
    """A job's connection to the Airflow connection ``conn_id`` (through PgBouncer by default),
    through the project's one connector: rows as dicts, no prepared statements, autocommit (every
    unit of work is an explicit ``conn.transaction()`` block)."""
    from bisman_ops.clients import postgres

    return postgres.connect(conn_id, autocommit=True, application_name=application_name, row_factory=dict_row)


def connect(dsn: str, *, application_name: str = "bisman-ops") -> psycopg.Connection:
    """The same for a DSN the caller already has (tests, the benchmark)."""
    from bisman_ops.clients import postgres

    return postgres.connect_dsn(dsn, autocommit=True, application_name=application_name, row_factory=dict_row)


def set_statement_timeout(cur: psycopg.Cursor) -> None:
    """Bound the statements of the current transaction (SET LOCAL: nothing leaks to the pool)."""
    cur.execute(f"SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT}'")


def app_db_uri(conn_id: str = config.APP_DB_CONN_ID) -> str:
    """The libpq conninfo of the Airflow connection ``conn_id`` (it carries the password: never log it)."""
    from bisman_ops.clients import postgres

    return postgres.conninfo(conn_id)
