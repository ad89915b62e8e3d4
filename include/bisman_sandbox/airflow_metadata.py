"""Airflow's own metadata database for the local Airflow: a PostgreSQL 15 cluster of its own under
the Airflow home, never SQLite (SQLite refuses backfills under concurrent access and serialises
every component behind one file lock).

A cluster of its own rather than a database on the sandbox's primary: the rehearsal's drills and
rollbacks restart, copy and restore the sandbox's databases, and Airflow must keep running
through them, as it would against RDS in production.

The ``airflow`` role's password and Airflow's shared keys (JWT secret, Fernet key, API secret key)
are generated once per Airflow home into ``keys.json`` (mode 0600) and handed to the components
through their environment; nothing prints them.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bisman_sandbox.context import HOST, SandboxContext
from bisman_sandbox.process import (
    SandboxError,
    pid_alive,
    pid_from_pidfile,
    port_open,
    start_process,
    stop_process,
    wait_until,
)

PG_BIN = Path("/usr/lib/postgresql/15/bin")
OS_USER = "postgres"
ROLE = "airflow"
DATABASE = "airflow"
PROCESS = "airflow_metadata_db"
COMMAND_TIMEOUT_S = 120
START_TIMEOUT_S = 60.0


def keys(home: Path) -> dict[str, str]:
    """The Airflow home's generated secrets, created on first use and kept (mode 0600)."""
    from cryptography.fernet import Fernet

    home.mkdir(parents=True, exist_ok=True)
    path = home / "keys.json"
    known = json.loads(path.read_text()) if path.exists() else {}
    wanted = {
        "db_password": lambda: secrets.token_urlsafe(24),
        "jwt_secret": lambda: secrets.token_urlsafe(48),
        "fernet_key": lambda: Fernet.generate_key().decode(),
        "api_secret_key": lambda: secrets.token_urlsafe(32),
    }
    missing = {name: make() for name, make in wanted.items() if name not in known}
    if missing:
        known.update(missing)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(known, f)
    return known


@dataclass(frozen=True)
class MetadataDatabase:
    """The cluster in ``<home>/metadata-db`` listening on ``HOST:port``."""

    home: Path
    port: int

    @property
    def _ctx(self) -> SandboxContext:
        return SandboxContext(state_dir=self.home / "processes")

    @property
    def base(self) -> Path:
        return self.home / "metadata-db"

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def sockets(self) -> Path:
        return self.base / "run"

    def sqlalchemy_url(self) -> str:
        password = keys(self.home)["db_password"]
        return f"postgresql+psycopg2://{ROLE}:{password}@{HOST}:{self.port}/{DATABASE}"

    # -- lifecycle -----------------------------------------------------------------------------
    def up(self) -> None:
        if self._postmaster_pid() is None:
            stop_process(self._ctx, PROCESS)  # a runuser wrapper whose postmaster died
            if port_open(self.port):
                raise SandboxError(f"{HOST}:{self.port} is taken by another process; Airflow's metadata "
                                   "database needs it: set BISMAN_AIRFLOW_PORT to move Airflow's ports")
            self._initialise()
            self._write_config()
            start_process(self._ctx, PROCESS, [str(PG_BIN / "postgres"), "-D", str(self.data)],
                          user=OS_USER)
        wait_until(self._accepting, timeout=START_TIMEOUT_S,
                   what=f"Airflow's metadata database on {HOST}:{self.port}")
        self._ensure_role_and_database()

    def down(self, timeout: float = 30.0) -> bool:
        pid = self._postmaster_pid()
        if pid is not None:
            os.kill(pid, signal.SIGINT)  # PostgreSQL's fast shutdown
            deadline = time.monotonic() + timeout
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if pid_alive(pid):
                os.kill(pid, signal.SIGQUIT)
        return stop_process(self._ctx, PROCESS) or pid is not None

    def healthy(self) -> bool:
        try:
            return self._accepting()
        except SandboxError:
            return False

    # -- internals -----------------------------------------------------------------------------
    def _postmaster_pid(self) -> int | None:
        return pid_from_pidfile(self.data / "postmaster.pid", "postgres")

    def _as_postgres(self, argv: list[str], what: str, stdin: str | None = None) -> str:
        if os.geteuid() == 0:
            argv = ["runuser", "-u", OS_USER, "--", *argv]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, cwd="/",
                                  input=stdin)
        except subprocess.TimeoutExpired as exc:
            raise SandboxError(f"{what} did not finish within {COMMAND_TIMEOUT_S} s") from exc
        if done.returncode != 0:
            tail = (done.stderr or done.stdout)[-800:]
            raise SandboxError(f"{what} failed (exit {done.returncode}): {tail}")
        return done.stdout

    def _initialise(self) -> None:
        import pwd

        if (self.data / "PG_VERSION").exists():
            return
        if not (PG_BIN / "initdb").exists():
            raise SandboxError(f"PostgreSQL 15 binaries not found in {PG_BIN}; apt-get install postgresql-15")
        user = pwd.getpwnam(OS_USER)
        shutil.rmtree(self.data, ignore_errors=True)  # a half-done initdb
        # The home is ours: let postgres pass through it (x only), into folders it owns.
        self.home.chmod(self.home.stat().st_mode | 0o001)
        for d in (self.base, self.sockets):
            d.mkdir(parents=True, exist_ok=True)
            os.chown(d, user.pw_uid, user.pw_gid)
            d.chmod(0o700)
        self._as_postgres([str(PG_BIN / "initdb"), "-D", str(self.data), "-U", OS_USER, "-E", "UTF8",
                           "--locale=C.UTF-8", "--auth-local=peer", "--auth-host=scram-sha-256",
                           "--no-sync"], "initdb of Airflow's metadata database")

    def _write_config(self) -> None:
        import pwd

        user = pwd.getpwnam(OS_USER)
        conf = self.data / "postgresql.conf"
        conf.write_text(
            "# Generated by bisman_sandbox.airflow_metadata at each start; edits are lost.\n"
            f"listen_addresses = '{HOST}'\nport = {self.port}\n"
            f"unix_socket_directories = '{self.sockets}'\nunix_socket_permissions = 0700\n"
            # The scheduler, dag processor, triggerer, API server and every task process hold
            # connections of their own.
            "max_connections = 200\nshared_buffers = 64MB\nfsync = off\nsynchronous_commit = off\n"
            "timezone = 'UTC'\nlog_timezone = 'UTC'\n"
        )
        hba = self.data / "pg_hba.conf"
        hba.write_text(f"local all {OS_USER} peer\nhost {DATABASE} {ROLE} {HOST}/32 scram-sha-256\n")
        for f in (conf, hba):
            os.chown(f, user.pw_uid, user.pw_gid)

    def _psql(self, sql: str, what: str) -> str:
        # SQL on stdin, not argv: the role's password must not show in the process list.
        return self._as_postgres(["psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1",
                                  "-h", str(self.sockets), "-p", str(self.port), "-U", OS_USER,
                                  "-d", "postgres"], what, stdin=sql)

    def _accepting(self) -> bool:
        self._psql("SELECT 1", "connecting to Airflow's metadata database")
        return True

    def _ensure_role_and_database(self) -> None:
        password = keys(self.home)["db_password"].replace("'", "''")
        # The password is set on every start, so a regenerated keys.json still matches the role.
        self._psql(
            f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}') THEN "
            f"CREATE ROLE {ROLE} LOGIN; END IF; END $$; ALTER ROLE {ROLE} PASSWORD '{password}';",
            "creating Airflow's database role",
        )
        exists = self._psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'", "finding the database")
        if not exists.strip():
            self._psql(f"CREATE DATABASE {DATABASE} OWNER {ROLE}", "creating Airflow's database")
