"""PgBouncer in front of the sandbox's PostgreSQL, as the application reaches RDS.

Two pools in transaction mode: ``bisman_staging`` (read-write, to the primary) and
``bisman_staging_ro`` (read-only, to the replica). Timeouts are short so that, with the replica
down, a query on the read-only pool fails within a few seconds and the application can fall back
to the primary.

Clients authenticate with SCRAM against a userlist generated in the state folder (mode 600). It
holds SCRAM secrets, not passwords: the application role's is copied from ``pg_authid``, so
PgBouncer can pass the client's SCRAM proof on to PostgreSQL (primary and replica share it).

PgBouncer 1.18 (Debian 12) has no protocol-level prepared statements in transaction mode
(``max_prepared_statements`` came in 1.21): psycopg 3 clients must connect with
``prepare_threshold=None``. psycopg2 and Airflow's PostgresHook never prepare, so they are fine.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import pwd
import signal
import time
from pathlib import Path

import psycopg

from bisman_ops import config
from bisman_sandbox import context, postgres
from bisman_sandbox.context import HOST, SandboxContext
from bisman_sandbox.process import (
    SandboxError,
    pid_alive,
    pid_from_pidfile,
    port_open,
    read_pid,
    start_process,
    stop_process,
    wait_until,
)

PGBOUNCER_BIN = "/usr/sbin/pgbouncer"
PROC_NAME = "pgbouncer"
ADMIN_USER = "pgbouncer_admin"
ADMIN_PASSWORD = "sandbox-pgbouncer-admin-password-not-secret"
ADMIN_DB = "pgbouncer"
RW_DB = context.DB_NAME
RO_DB = f"{context.DB_NAME}_ro"
POOL_MODE = "transaction"
DEFAULT_POOL_SIZE = 5
MAX_CLIENT_CONN = 200
# Seconds. A dead server fails a waiting client after QUERY_WAIT_TIMEOUT at the latest.
SERVER_CONNECT_TIMEOUT = 2
SERVER_LOGIN_RETRY = 1
QUERY_WAIT_TIMEOUT = 3
CONNECT_TIMEOUT_S = 5
START_TIMEOUT_S = 20.0
_SCRAM_ITERATIONS = 4096


def folder(ctx: SandboxContext) -> Path:
    return ctx.state_dir / "pgbouncer"


def dsn(ctx: SandboxContext, pool: str = "rw") -> str:
    """DSN of the read-write pool (``rw``), the read-only pool (``ro``) or the admin console
    (``admin``). psycopg 3 users: pass ``prepare_threshold=None`` (see the module docstring)."""
    if pool == "admin":
        user, password, db = ADMIN_USER, ADMIN_PASSWORD, ADMIN_DB
    elif pool in ("rw", "ro"):
        user, password, db = context.DB_USER, context.DB_PASSWORD, RW_DB if pool == "rw" else RO_DB
    else:
        raise ValueError(f"unknown pool {pool!r}; expected rw, ro or admin")
    return f"postgresql://{user}:{password}@{HOST}:{ctx.port('pgbouncer')}/{db}?connect_timeout={CONNECT_TIMEOUT_S}"


def up(ctx: SandboxContext) -> dict[str, str]:
    if not healthy(ctx):
        _write_files(ctx)
        if _pgbouncer_pid(ctx) is None:
            stop_process(ctx, PROC_NAME)  # a wrapper whose pgbouncer died
            if port_open(ctx.port("pgbouncer")):
                raise SandboxError(
                    f"{HOST}:{ctx.port('pgbouncer')} is taken by a process this sandbox did not start; "
                    "stop it or move the sandbox with BISMAN_SANDBOX_PORT_OFFSET"
                )
            start_process(
                ctx, PROC_NAME, [PGBOUNCER_BIN, str(folder(ctx) / "pgbouncer.ini")], user="postgres"
            )

        def admin_answers() -> bool:
            if not pid_alive(read_pid(ctx, PROC_NAME) or -1):
                raise SandboxError(f"pgbouncer exited during start; see {ctx.log_dir / 'pgbouncer.log'}")
            return healthy(ctx)

        wait_until(
            admin_answers, timeout=START_TIMEOUT_S, what=f"pgbouncer on {HOST}:{ctx.port('pgbouncer')}"
        )
    base = f"postgresql://{HOST}:{ctx.port('pgbouncer')}"
    return {"pgbouncer (read-write)": f"{base}/{RW_DB}", "pgbouncer (read-only)": f"{base}/{RO_DB}"}


def down(ctx: SandboxContext) -> None:
    # SIGTERM is PgBouncer's immediate shutdown; sent to the process itself, not through the
    # runuser wrapper, which would SIGKILL it two seconds later.
    pid = _pgbouncer_pid(ctx)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    stop_process(ctx, PROC_NAME)


def healthy(ctx: SandboxContext) -> bool:
    if _pgbouncer_pid(ctx) is None:
        return False  # whatever answers on the port is not this sandbox's PgBouncer
    try:
        with _admin_connect(dsn(ctx, "admin"), connect_timeout=2) as conn:
            conn.execute("SHOW VERSION")
        return True
    except psycopg.Error:
        return False


def settings(ctx: SandboxContext) -> dict[str, str]:
    """How the database rollback rewrites PgBouncer's configuration: its ini in the state folder
    (bisman_sandbox.rollback_impl)."""
    from bisman_ops.extension import env_var

    return {env_var("pgbouncer_config"): "bisman_sandbox.rollback_impl:SandboxPgBouncerConfig"}


def connections(ctx: SandboxContext) -> dict[str, dict]:
    port = ctx.port("pgbouncer")
    return {
        config.APP_DB_CONN_ID: {
            "conn_type": "postgres",
            "host": HOST,
            "port": port,
            "login": context.DB_USER,
            "password": context.DB_PASSWORD,
            "schema": RW_DB,
            "extra": {"connect_timeout": CONNECT_TIMEOUT_S},
        },
        config.PGBOUNCER_ADMIN_CONN_ID: {
            "conn_type": "postgres",
            "host": HOST,
            "port": port,
            "login": ADMIN_USER,
            "password": ADMIN_PASSWORD,
            "schema": ADMIN_DB,
            "extra": {"connect_timeout": CONNECT_TIMEOUT_S},
        },
    }


def paused_databases(ctx: SandboxContext) -> list[str]:
    """The pools PgBouncer holds paused (``SHOW DATABASES``' paused column)."""
    from psycopg.rows import dict_row

    with _admin_connect(dsn(ctx, "admin"), row_factory=dict_row) as admin:
        return sorted(r["name"] for r in admin.execute("SHOW DATABASES").fetchall() if r["paused"])


def _admin_connect(dsn_: str, **kwargs) -> psycopg.Connection:
    # The admin console speaks only the simple query protocol: no transactions, no prepares.
    return psycopg.connect(dsn_, autocommit=True, prepare_threshold=None, **kwargs)


def _pgbouncer_pid(ctx: SandboxContext) -> int | None:
    return pid_from_pidfile(folder(ctx) / "pgbouncer.pid", "pgbouncer")


def _write_files(ctx: SandboxContext) -> None:
    user = pwd.getpwnam("postgres")
    d = folder(ctx)
    d.mkdir(parents=True, exist_ok=True)
    os.chown(d, user.pw_uid, user.pw_gid)
    d.chmod(0o700)
    userlist = d / "userlist.txt"
    userlist.touch(mode=0o600)
    userlist.chmod(0o600)
    os.chown(userlist, user.pw_uid, user.pw_gid)
    userlist.write_text(
        f'"{context.DB_USER}" "{_app_role_secret(ctx)}"\n"{ADMIN_USER}" "{scram_secret(ADMIN_PASSWORD)}"\n'
    )
    ini = d / "pgbouncer.ini"
    primary, replica = ctx.port("postgres_primary"), ctx.port("postgres_replica")
    ini.write_text(
        f"""; Generated by bisman_sandbox.pgbouncer at each start; edits are lost.
[databases]
{RW_DB} = host={HOST} port={primary} dbname={context.DB_NAME}
{RO_DB} = host={HOST} port={replica} dbname={context.DB_NAME}

[pgbouncer]
listen_addr = {HOST}
listen_port = {ctx.port("pgbouncer")}
unix_socket_dir = {d}
pidfile = {d / "pgbouncer.pid"}
auth_type = scram-sha-256
auth_file = {userlist}
admin_users = {ADMIN_USER}
stats_users = {ADMIN_USER}
pool_mode = {POOL_MODE}
default_pool_size = {DEFAULT_POOL_SIZE}
max_client_conn = {MAX_CLIENT_CONN}
server_connect_timeout = {SERVER_CONNECT_TIMEOUT}
server_login_retry = {SERVER_LOGIN_RETRY}
query_wait_timeout = {QUERY_WAIT_TIMEOUT}
ignore_startup_parameters = extra_float_digits
syslog = 0
"""
    )
    os.chown(ini, user.pw_uid, user.pw_gid)


def _app_role_secret(ctx: SandboxContext) -> str:
    try:
        with postgres.connect(postgres.superuser_dsn(ctx, "primary")) as conn:
            row = conn.execute(
                "SELECT rolpassword FROM pg_authid WHERE rolname = %s", (context.DB_USER,)
            ).fetchone()
    except psycopg.OperationalError as exc:
        raise SandboxError(
            f"pgbouncer needs the primary up to copy the {context.DB_USER} SCRAM secret; start postgres first"
        ) from exc
    if not row or not (row[0] or "").startswith("SCRAM-SHA-256$"):
        raise SandboxError(f"role {context.DB_USER} has no SCRAM password on the primary; rerun postgres up")
    return row[0]


def scram_secret(password: str, salt: bytes | None = None, iterations: int = _SCRAM_ITERATIONS) -> str:
    """A SCRAM-SHA-256 secret in PostgreSQL's format (RFC 5803), so no password is stored."""
    salt = salt or os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(b: bytes) -> str:
        return base64.b64encode(b).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"
