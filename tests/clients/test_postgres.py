"""The one PostgreSQL connector: built on PostgresHook, honouring the connection's extras."""

from __future__ import annotations

import json

import psycopg
import pytest
from psycopg.rows import dict_row

from bisman_ops import config
from bisman_ops.clients import postgres

pytestmark = pytest.mark.sandbox


def test_connection_extras_reach_the_server(airflow_conns, monkeypatch):
    conn = dict(airflow_conns[config.APP_DB_PRIMARY_CONN_ID])
    conn["extra"] = {"connect_timeout": 3, "options": "-c statement_timeout=4321", "sslmode": "disable"}
    monkeypatch.setenv("AIRFLOW_CONN_WITH_EXTRAS", json.dumps(conn))
    with postgres.connect("with_extras", application_name="extras-test") as c:
        assert c.execute("SHOW statement_timeout").fetchone()[0] == "4321ms"
        assert c.execute("SELECT current_setting('application_name')").fetchone()[0] == "extras-test"
        assert c.info.get_parameters()["connect_timeout"] == "3"
        assert c.prepare_threshold is None
        assert not c.autocommit


def test_connect_timeout_defaults_when_the_connection_sets_none(airflow_conns, monkeypatch):
    conn = dict(airflow_conns[config.APP_DB_PRIMARY_CONN_ID])
    conn.pop("extra", None)
    monkeypatch.setenv("AIRFLOW_CONN_BARE", json.dumps(conn))
    with postgres.connect("bare", autocommit=True, row_factory=dict_row) as c:
        assert c.info.get_parameters()["connect_timeout"] == str(postgres.CONNECT_TIMEOUT_S)
        assert c.autocommit
        assert c.execute("SELECT 1 AS one").fetchone() == {"one": 1}


def test_dbname_overrides_the_connection_schema(airflow_conns):
    with postgres.connect(config.APP_DB_PRIMARY_CONN_ID, dbname="postgres") as c:
        assert c.execute("SELECT current_database()").fetchone()[0] == "postgres"


def test_pgbouncer_admin_console_answers_through_the_connector(airflow_conns):
    # The console speaks only the simple protocol: a prepared statement would fail here.
    with postgres.connect(config.PGBOUNCER_ADMIN_CONN_ID, autocommit=True, row_factory=dict_row) as c:
        names = {r["name"] for r in c.execute("SHOW DATABASES").fetchall()}
    assert airflow_conns[config.APP_DB_CONN_ID]["schema"] in names


def test_connect_dsn_applies_the_same_defaults(airflow_conns):
    dsn = postgres.conninfo(config.APP_DB_PRIMARY_CONN_ID)
    with postgres.connect_dsn(dsn, application_name="dsn-test") as c:
        assert c.execute("SELECT current_setting('application_name')").fetchone()[0] == "dsn-test"
        assert c.prepare_threshold is None


def test_a_wrong_password_fails_with_the_server_refusal(airflow_conns, monkeypatch):
    conn = dict(airflow_conns[config.APP_DB_PRIMARY_CONN_ID], password="wrong")
    monkeypatch.setenv("AIRFLOW_CONN_WRONG", json.dumps(conn))
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        postgres.connect("wrong")


def test_endpoint_names_host_and_port_only(airflow_conns):
    c = airflow_conns[config.APP_DB_CONN_ID]
    assert postgres.endpoint(config.APP_DB_CONN_ID) == (c["host"], c["port"])
