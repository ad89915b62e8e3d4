"""PostgreSQL through ``PostgresHook``: the one connector for the application's databases and
PgBouncer's admin console.

``connect`` honours the Airflow connection's extras (``connect_timeout``, ``sslmode``, ``options``,
IAM tokens: whatever the provider passes to psycopg) and adds what every caller here needs:
no server-side prepared statements (PgBouncer in transaction mode hands the next transaction to
another server connection, and its admin console speaks only the simple protocol), a connect
timeout when the connection sets none, and an ``application_name`` that shows in
``pg_stat_activity``. ``connect_dsn`` is the same for a DSN the code already has (Terraform outputs).
"""

from __future__ import annotations

from typing import Any

import psycopg

CONNECT_TIMEOUT_S = 10
DEFAULT_APPLICATION_NAME = "bisman-ops"


def _defaults(
    args: dict[str, Any],
    *,
    autocommit: bool,
    application_name: str | None,
    row_factory: Any,
    host: str | None = None,
    port: int | None = None,
) -> dict[str, Any]:
    if host:
        args["host"] = host
    if port:
        args["port"] = port
    args.setdefault("connect_timeout", CONNECT_TIMEOUT_S)
    if application_name or "application_name" not in args:
        args["application_name"] = application_name or DEFAULT_APPLICATION_NAME
    args["autocommit"] = autocommit
    args["prepare_threshold"] = None
    if row_factory is not None:
        args["row_factory"] = row_factory
    return args


def _hook_class():
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    class _Hook(PostgresHook):
        """The provider's hook, with our connection defaults applied to what it builds."""

        def __init__(self, *args, connect_defaults: dict[str, Any], **kwargs):
            super().__init__(*args, **kwargs)
            self._connect_defaults = connect_defaults

        def _create_connection(self, conn_args: dict[str, Any]):
            return super()._create_connection(_defaults(dict(conn_args), **self._connect_defaults))

    return _Hook


def connect(
    conn_id: str,
    *,
    autocommit: bool = False,
    application_name: str | None = None,
    dbname: str | None = None,
    row_factory: Any = None,
    host: str | None = None,
    port: int | None = None,
) -> psycopg.Connection:
    """A psycopg connection for the Airflow connection ``conn_id``. ``dbname`` overrides its schema;
    ``host`` and ``port`` send its credentials to another server (a restored instance)."""
    hook = _hook_class()(
        postgres_conn_id=conn_id,
        database=dbname,
        connect_defaults={
            "autocommit": autocommit,
            "application_name": application_name,
            "row_factory": row_factory,
            "host": host,
            "port": port,
        },
    )
    return hook.get_conn()


def connect_dsn(
    dsn: str,
    *,
    autocommit: bool = False,
    application_name: str | None = None,
    dbname: str | None = None,
    row_factory: Any = None,
) -> psycopg.Connection:
    """A psycopg connection for a DSN (URI or key=value) with the same defaults as ``connect``."""
    from psycopg.conninfo import conninfo_to_dict

    args: dict[str, Any] = dict(conninfo_to_dict(dsn))
    if dbname:
        args["dbname"] = dbname
    return psycopg.connect(
        **_defaults(args, autocommit=autocommit, application_name=application_name, row_factory=row_factory)
    )


def conninfo(conn_id: str, *, dbname: str | None = None) -> str:
    """The libpq conninfo of ``conn_id``, for a tool that takes a DSN (``pg_dump``, a subprocess).
    It carries the password: never log it or pass it through XCom."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook
    from psycopg.conninfo import make_conninfo

    hook = PostgresHook(postgres_conn_id=conn_id)
    c = hook.connection
    extra = {k: v for k, v in (c.extra_dejson or {}).items() if k not in hook.ignored_extra_options}
    extra.setdefault("connect_timeout", CONNECT_TIMEOUT_S)
    return make_conninfo(
        host=c.host,
        port=c.port or 5432,
        user=c.login,
        password=c.password or "",
        dbname=dbname or c.schema or "",
        **extra,
    )


def endpoint(conn_id: str) -> tuple[str, int]:
    """``(host, port)`` of the Airflow connection ``conn_id``: where it points, without secrets."""
    from airflow.sdk import BaseHook

    c = BaseHook.get_connection(conn_id)
    return c.host or "", int(c.port or 5432)
