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
CONNECT_TIMEOUT_S = 10
# A job's statements are set-based; one running longer than this is stuck, not slow.
STATEMENT_TIMEOUT = "15min"


@cache
def sql(name: str) -> str:
    """The text of ``include/sql/recurring/<name>.sql``."""
    return (SQL_DIR / f"{name}.sql").read_text(encoding="utf-8")


def connect(uri: str, *, application_name: str = "bisman-ops") -> psycopg.Connection:
    """A connection for one job: rows as dicts, no prepared statements, a connect timeout."""
    return psycopg.connect(
        uri,
        connect_timeout=CONNECT_TIMEOUT_S,
        application_name=application_name,
        autocommit=True,  # every unit of work is an explicit conn.transaction() block
        prepare_threshold=None,
        row_factory=dict_row,
    )


def set_statement_timeout(cur: psycopg.Cursor) -> None:
    """Bound the statements of the current transaction (SET LOCAL: nothing leaks to the pool)."""
    cur.execute(f"SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT}'")


def app_db_uri(conn_id: str = config.APP_DB_CONN_ID) -> str:
    """The URI of the Airflow connection ``conn_id`` (through PgBouncer by default)."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    uri = PostgresHook(postgres_conn_id=conn_id).get_uri()
    # The hook speaks SQLAlchemy ("postgresql+psycopg://"); libpq wants the bare scheme.
    scheme, sep, rest = uri.partition("://")
    return f"{scheme.split('+')[0]}{sep}{rest}"
