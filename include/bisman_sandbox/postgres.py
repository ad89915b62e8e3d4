"""PostgreSQL 15 primary and streaming read replica, the sandbox's stand-in for RDS.

Both run Debian's binaries as the ``postgres`` user, listen on 127.0.0.1 only (SCRAM over TCP)
and keep their unix sockets in ``<state>/postgres/run`` (mode 0700, so only ``postgres`` and root
reach the ``trust`` local login used for administration). The replica is a
``pg_basebackup -R -X stream`` copy of the primary. ``up`` then applies the migrations and the
seed as the application role, which owns the database as the app's role does in production.

Restores are to a point in time, as RDS restores a snapshot: the primary archives its WAL
(``<state>/postgres/wal-archive``), ``up`` keeps a base backup of it (``restore-base``), and a
restored instance is that base replayed to the snapshot's time, so a write made after the
snapshot is not in it however late the restore runs.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

from bisman_ops import config, migrations
from bisman_sandbox import context
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

PG_BIN = Path("/usr/lib/postgresql/15/bin")
OS_USER = "postgres"
SUPERUSER = "postgres"
REPLICATION_USER = "bisman_replicator"
REPLICATION_PASSWORD = "sandbox-replication-password-not-secret"
# Read-only role with pg_monitor, for lag probes and exporters that should not use the app's role.
MONITOR_USER = "bisman_monitor"
MONITOR_PASSWORD = "sandbox-monitor-password-not-secret"
SEED_FILE = Path(__file__).resolve().parent / "sql" / "seed.sql"
CONNECT_TIMEOUT_S = 5
START_TIMEOUT_S = 60.0
COMMAND_TIMEOUT_S = 120

INSTANCES = ("primary", "replica")


def _port(ctx: SandboxContext, which: str) -> int:
    return ctx.port(f"postgres_{which}")


def _proc_name(which: str) -> str:
    return f"postgres_{which}"


def base_dir(ctx: SandboxContext) -> Path:
    return ctx.state_dir / "postgres"


def data_dir(ctx: SandboxContext, which: str) -> Path:
    return base_dir(ctx) / which


def socket_dir(ctx: SandboxContext) -> Path:
    return base_dir(ctx) / "run"


def wal_archive_dir(ctx: SandboxContext) -> Path:
    return base_dir(ctx) / "wal-archive"


def restore_base_dir(ctx: SandboxContext) -> Path:
    return base_dir(ctx) / "restore-base"


def dsn(ctx: SandboxContext, which: str = "primary", dbname: str = context.DB_NAME) -> str:
    """The application role's DSN for the primary or the replica, over TCP."""
    if which not in INSTANCES:
        raise ValueError(f"unknown instance {which!r}; expected one of {', '.join(INSTANCES)}")
    return (
        f"postgresql://{context.DB_USER}:{context.DB_PASSWORD}@{HOST}:{_port(ctx, which)}/{dbname}"
        f"?connect_timeout={CONNECT_TIMEOUT_S}"
    )


def superuser_dsn(ctx: SandboxContext, which: str = "primary", dbname: str = "postgres") -> str:
    """The ``postgres`` superuser over the unix socket (root and ``postgres`` only)."""
    return make_conninfo(
        host=str(socket_dir(ctx)),
        port=_port(ctx, which),
        user=SUPERUSER,
        dbname=dbname,
        connect_timeout=CONNECT_TIMEOUT_S,
    )


def connect(dsn_: str, **kwargs) -> psycopg.Connection:
    return psycopg.connect(dsn_, autocommit=True, prepare_threshold=None, **kwargs)


# ---------------------------------------------------------------------------------------------
# lifecycle


def up(ctx: SandboxContext) -> dict[str, str]:
    if healthy(ctx):
        return _where(ctx)
    _prepare_dirs(ctx)
    fresh_primary = _ensure_primary_initialised(ctx)
    if fresh_primary:
        # A replica of an earlier primary cannot follow this one.
        _stop(ctx, "replica")
        shutil.rmtree(data_dir(ctx, "replica"), ignore_errors=True)
    _start(ctx, "primary")
    _ensure_roles(ctx)
    start_replica(ctx)
    try:
        migrations.migrate(dsn(ctx, "primary"))
    except migrations.MigrationError as exc:
        raise SandboxError(f"sandbox database migrations: {exc}") from exc
    _seed(ctx)
    wait_for_replica_catch_up(ctx)
    _ensure_restore_base(ctx)
    return _where(ctx)


def down(ctx: SandboxContext) -> None:
    for name in restored_names(ctx):
        stop_restored(ctx, name)
    for which in ("replica", "primary"):
        _stop(ctx, which)


def healthy(ctx: SandboxContext) -> bool:
    try:
        with connect(superuser_dsn(ctx, "primary"), connect_timeout=2) as conn:
            if conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                return False
        return replica_streaming(ctx)
    except psycopg.Error:
        return False


def settings(ctx: SandboxContext) -> dict[str, str]:
    """Where a database rollback finds SQL: an instance moto restores gets a real PostgreSQL of its
    own (``ensure_restored``; bisman_sandbox.rollback_impl)."""
    from bisman_ops.extension import env_var

    return {env_var("database_endpoints"): "bisman_sandbox.rollback_impl:SandboxDatabaseEndpoints"}


def connections(ctx: SandboxContext) -> dict[str, dict]:
    def conn(which: str) -> dict:
        return {
            "conn_type": "postgres",
            "host": HOST,
            "port": _port(ctx, which),
            "login": context.DB_USER,
            "password": context.DB_PASSWORD,
            "schema": context.DB_NAME,
            "extra": {"connect_timeout": CONNECT_TIMEOUT_S},
        }

    return {
        config.APP_DB_PRIMARY_CONN_ID: conn("primary"),
        config.APP_DB_REPLICA_CONN_ID: conn("replica"),
    }


def stop_replica(ctx: SandboxContext) -> None:
    """Fast shutdown of the replica (the failover drill's 'replica down')."""
    _stop(ctx, "replica")


def start_replica(ctx: SandboxContext) -> None:
    """Start the replica (building it from the primary if missing); return once it streams."""
    replica = data_dir(ctx, "replica")
    if not (replica / "PG_VERSION").exists() or not (replica / "standby.signal").exists():
        _base_backup(ctx)
    _start(ctx, "replica")
    wait_until(
        lambda: replica_streaming(ctx),
        timeout=START_TIMEOUT_S,
        what=f"replica on {HOST}:{_port(ctx, 'replica')} streaming from the primary",
    )


def wait_for_replica_catch_up(ctx: SandboxContext, timeout: float = 30.0) -> None:
    """Return once the replica has replayed everything the primary has written so far."""
    with connect(superuser_dsn(ctx, "primary")) as primary:
        target = primary.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0]

    def replayed() -> bool:
        with connect(superuser_dsn(ctx, "replica"), connect_timeout=2) as replica:
            return replica.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,)).fetchone()[0]

    wait_until(replayed, timeout=timeout, what=f"replica replaying the primary's WAL up to {target}")


def replica_lag_seconds(ctx: SandboxContext, timeout: float = 10.0) -> float:
    """Replay lag of the replica, measured right after a write on the primary.

    ``now() - pg_last_xact_replay_timestamp()`` grows while the primary is idle (it is the age of
    the last replayed commit), so commit something first and read the lag once the replica has
    replayed that commit: the result is the time from that commit to its replay being seen.
    """
    with connect(superuser_dsn(ctx, "primary")) as primary:
        # A transactional WAL message commits a real (synchronously flushed) transaction without
        # touching a table; an xid-only transaction would commit asynchronously.
        with primary.transaction():
            primary.execute("SELECT pg_logical_emit_message(true, 'bisman_lag_probe', '')")
        commit_lsn = primary.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0]
    try:
        replica = connect(superuser_dsn(ctx, "replica"))
    except psycopg.OperationalError as exc:
        raise SandboxError(f"replica on {HOST}:{_port(ctx, 'replica')} unreachable: {exc}") from exc
    with replica:
        deadline = time.monotonic() + timeout
        while True:
            replayed, lag = replica.execute(
                "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn,"
                " extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8",
                (commit_lsn,),
            ).fetchone()
            if replayed or time.monotonic() > deadline:
                break
            time.sleep(0.01)
    if lag is None:
        raise SandboxError("replica has replayed no transaction yet; is it streaming from the primary?")
    return max(0.0, float(lag))


# ---------------------------------------------------------------------------------------------
# internals


def _where(ctx: SandboxContext) -> dict[str, str]:
    return {
        f"postgres {which}": f"postgresql://{HOST}:{_port(ctx, which)}/{context.DB_NAME}"
        for which in INSTANCES
    }


def _pg_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(OS_USER)
    except KeyError as exc:
        raise SandboxError(f"no {OS_USER!r} OS user; install Debian's postgresql package") from exc


def _prepare_dirs(ctx: SandboxContext) -> None:
    """Create the postgres folders owned by ``postgres`` and check that it can reach them."""
    user = _pg_user()
    if not (PG_BIN / "postgres").exists():
        raise SandboxError(f"PostgreSQL 15 binaries not found in {PG_BIN}; apt-get install postgresql-15")
    ctx.state_dir.mkdir(parents=True, exist_ok=True)
    for d in (base_dir(ctx), socket_dir(ctx), wal_archive_dir(ctx)):
        d.mkdir(parents=True, exist_ok=True)
        os.chown(d, user.pw_uid, user.pw_gid)
        d.chmod(0o700)
    # The state folder is ours: let postgres pass through it (x only). Folders above it are not.
    ctx.state_dir.chmod(ctx.state_dir.stat().st_mode | 0o001)
    _check_traversable(ctx.state_dir, user)


def _check_traversable(path: Path, user: pwd.struct_passwd) -> None:
    for d in [path, *path.parents]:
        st = d.stat()
        if st.st_uid == user.pw_uid:
            ok = st.st_mode & 0o100
        elif st.st_gid == user.pw_gid:
            ok = st.st_mode & 0o010
        else:
            ok = st.st_mode & 0o001
        if not ok:
            raise SandboxError(
                f"the {OS_USER} user cannot enter {d} (mode {oct(st.st_mode & 0o777)}); "
                f"chmod o+x {d} or choose another BISMAN_SANDBOX_DIR"
            )


def _run_as_postgres(argv: list[str], what: str, env: dict[str, str] | None = None) -> None:
    try:
        result = subprocess.run(
            ["runuser", "-u", OS_USER, "--", *argv],
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            env={**os.environ, **(env or {})},
            cwd="/",
        )
    except subprocess.TimeoutExpired as exc:
        raise SandboxError(f"{what} did not finish within {COMMAND_TIMEOUT_S} s") from exc
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip()[-800:]
        raise SandboxError(f"{what} failed (exit {result.returncode}): {tail}")


def _ensure_primary_initialised(ctx: SandboxContext) -> bool:
    primary = data_dir(ctx, "primary")
    if (primary / "PG_VERSION").exists():
        return False
    shutil.rmtree(primary, ignore_errors=True)  # a half-done initdb
    _run_as_postgres(
        [
            str(PG_BIN / "initdb"),
            "-D",
            str(primary),
            "-U",
            SUPERUSER,
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--no-sync",
        ],
        "initdb of the sandbox primary",
    )
    return True


def _base_backup(ctx: SandboxContext) -> None:
    replica = data_dir(ctx, "replica")
    _stop(ctx, "replica")
    shutil.rmtree(replica, ignore_errors=True)
    # -R writes primary_conninfo, password included, into the replica's postgresql.auto.conf
    # (inside the 0700 data folder); PGPASSWORD keeps it off the command line.
    _run_as_postgres(
        [
            str(PG_BIN / "pg_basebackup"),
            "-h",
            HOST,
            "-p",
            str(_port(ctx, "primary")),
            "-U",
            REPLICATION_USER,
            "-D",
            str(replica),
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
            "--no-sync",
        ],
        "pg_basebackup of the sandbox replica from the primary",
        env={"PGPASSWORD": REPLICATION_PASSWORD, "PGCONNECT_TIMEOUT": str(CONNECT_TIMEOUT_S)},
    )


def _write_config(ctx: SandboxContext, which: str) -> None:
    extra = ""
    if which == "primary":  # what a restore to a point in time replays (RDS keeps it too)
        archive = str(wal_archive_dir(ctx)).replace("'", "''")
        # Compressed: a segment switched early for a restore is 16 MB of mostly zeros.
        # A segment archived already (a crash before PostgreSQL noted it) counts as archived: a
        # failing command would be retried for ever and stop the archive.
        extra = ("archive_mode = on\n"
                 f"archive_command = 'test -f {archive}/%f.gz || (gzip -1 < %p > {archive}/%f.tmp "
                 f"&& mv {archive}/%f.tmp {archive}/%f.gz)'\n")
    _write_config_files(ctx, data_dir(ctx, which), _port(ctx, which), which, extra)
    if which == "replica":
        _repoint_replica(ctx)


def _write_config_files(ctx: SandboxContext, data: Path, port: int, which: str, extra: str = "") -> None:
    sock = str(socket_dir(ctx)).replace("'", "''")
    (data / "postgresql.conf").write_text(
        f"""# Generated by bisman_sandbox.postgres at each start; edits are lost.
listen_addresses = '{HOST}'
port = {port}
unix_socket_directories = '{sock}'
unix_socket_permissions = 0700
max_connections = 100
shared_buffers = 64MB
password_encryption = 'scram-sha-256'
wal_level = replica
max_wal_senders = 5
# Lets a stopped replica catch up from the primary's WAL without a replication slot, which
# would keep WAL for ever if the replica were thrown away.
wal_keep_size = '256MB'
hot_standby = on
hot_standby_feedback = on
timezone = 'UTC'
log_timezone = 'UTC'
log_line_prefix = '%m [%p] {which} %q%u@%d '
{extra}"""
    )
    (data / "pg_hba.conf").write_text(
        f"""# Generated by bisman_sandbox.postgres. The socket folder is 0700: only postgres and root
# reach the trusted local login.
local   all          {SUPERUSER}           trust
host    replication  {REPLICATION_USER}    {HOST}/32  scram-sha-256
host    all          all                   {HOST}/32  scram-sha-256
"""
    )
    user = _pg_user()
    for f in ("postgresql.conf", "pg_hba.conf"):
        os.chown(data / f, user.pw_uid, user.pw_gid)


def _repoint_replica(ctx: SandboxContext) -> None:
    """Point the replica's primary_conninfo (written once by pg_basebackup -R) at the primary's
    current port, so a state folder survives a change of ports."""
    auto = data_dir(ctx, "replica") / "postgresql.auto.conf"
    if not auto.exists():
        return
    lines = auto.read_text().splitlines(keepends=True)
    port = f"port={_port(ctx, 'primary')}"
    fixed = [re.sub(r"\bport=\d+", port, line) if line.startswith("primary_conninfo") else line
             for line in lines]
    if fixed != lines:
        auto.write_text("".join(fixed))


def _start(ctx: SandboxContext, which: str) -> None:
    name = _proc_name(which)
    if _postmaster_pid(ctx, which) is None:
        stop_process(ctx, name)  # a runuser wrapper whose postmaster died
        if port_open(_port(ctx, which)):
            raise SandboxError(
                f"{HOST}:{_port(ctx, which)} is taken by a process this sandbox did not start; "
                "stop it or move the sandbox with BISMAN_SANDBOX_PORT_OFFSET"
            )
        _write_config(ctx, which)
        start_process(ctx, name, [str(PG_BIN / "postgres"), "-D", str(data_dir(ctx, which))], user=OS_USER)

    def accepting() -> bool:
        if read_pid(ctx, name) is not None and not _wrapper_alive(ctx, which):
            raise SandboxError(f"postgres {which} exited during start; see {ctx.log_dir / (name + '.log')}")
        with connect(superuser_dsn(ctx, which), connect_timeout=2) as conn:
            conn.execute("SELECT 1")
        return True

    try:
        wait_until(accepting, timeout=START_TIMEOUT_S, what=f"postgres {which} on {HOST}:{_port(ctx, which)}")
    except SandboxError as exc:
        raise SandboxError(f"{exc}; see {ctx.log_dir / (name + '.log')}") from exc


def _wrapper_alive(ctx: SandboxContext, which: str) -> bool:
    pid = read_pid(ctx, _proc_name(which))
    return pid is not None and pid_alive(pid)


def _postmaster_pid(ctx: SandboxContext, which: str) -> int | None:
    """The running postmaster's PID from its own ``postmaster.pid`` (runuser forks, so the PID
    that start_process records is the wrapper's)."""
    return pid_from_pidfile(data_dir(ctx, which) / "postmaster.pid", "postgres")


def _stop(ctx: SandboxContext, which: str, timeout: float = 30.0) -> None:
    # SIGINT is PostgreSQL's fast shutdown. The wrapper's group SIGTERM would also signal every
    # backend, and runuser SIGKILLs its child 2 s after a signal.
    pid = _postmaster_pid(ctx, which)
    if pid is not None:
        os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + timeout
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_alive(pid):
            os.kill(pid, signal.SIGQUIT)  # immediate shutdown; crash recovery at next start
    stop_process(ctx, _proc_name(which))


def replica_streaming(ctx: SandboxContext) -> bool:
    """The replica is in recovery and its WAL receiver streams from the primary."""
    try:
        with connect(superuser_dsn(ctx, "replica"), connect_timeout=2) as conn:
            row = conn.execute(
                "SELECT pg_is_in_recovery(), (SELECT status FROM pg_stat_wal_receiver)"
            ).fetchone()
    except psycopg.OperationalError:
        return False
    return bool(row[0]) and row[1] == "streaming"


def _ensure_roles(ctx: SandboxContext) -> None:
    """Roles and the database, created once; passwords are set only at creation so that
    PgBouncer's copy of the SCRAM secret stays valid."""
    roles = [
        (context.DB_USER, context.DB_PASSWORD, "LOGIN"),
        (REPLICATION_USER, REPLICATION_PASSWORD, "LOGIN REPLICATION"),
        (MONITOR_USER, MONITOR_PASSWORD, "LOGIN"),
    ]
    with connect(superuser_dsn(ctx, "primary")) as conn:
        existing = {r[0] for r in conn.execute("SELECT rolname FROM pg_roles").fetchall()}
        for role, password, options in roles:
            if role not in existing:
                # CREATE ROLE takes no bind parameters; quote the literal on the server side.
                literal = conn.execute("SELECT quote_literal(%s)", (password,)).fetchone()[0]
                conn.execute(f'CREATE ROLE "{role}" {options} PASSWORD {literal}')
        conn.execute(f'GRANT pg_monitor TO "{MONITOR_USER}"')
        has_db = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (context.DB_NAME,)).fetchone()
        if not has_db:
            conn.execute(f'CREATE DATABASE "{context.DB_NAME}" OWNER "{context.DB_USER}"')


def _seed(ctx: SandboxContext) -> None:
    with connect(dsn(ctx, "primary")) as conn, conn.transaction():
        conn.execute(SEED_FILE.read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------------
# restored instances: what RDS's restore-from-snapshot gives, as a real server of its own


RESTORED_PORT_BASE = 40  # restored servers listen from the primary's port + this


def restored_dir(ctx: SandboxContext, name: str) -> Path:
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9-]{0,62}", name):
        raise ValueError(f"restored instance name {name!r} is not an RDS identifier")
    return base_dir(ctx) / "restored" / name


def restored_names(ctx: SandboxContext) -> list[str]:
    d = base_dir(ctx) / "restored"
    return sorted(p.name for p in d.iterdir() if p.is_dir()) if d.exists() else []


def restored_port(ctx: SandboxContext, name: str) -> int:
    """A port per restored instance, kept beside its data folder so it survives a restart."""
    d = restored_dir(ctx, name)
    port_file = d.parent / f"{name}.port"
    if port_file.exists():
        return int(port_file.read_text())
    taken = {int(p.read_text()) for p in d.parent.glob("*.port")} if d.parent.exists() else set()
    port = ctx.port("postgres_primary") + RESTORED_PORT_BASE
    while port in taken or port_open(port):
        port += 1
    d.parent.mkdir(parents=True, exist_ok=True)
    port_file.write_text(str(port))
    return port


def _ensure_restore_base(ctx: SandboxContext) -> None:
    """The base backup restores start from, taken once the primary archives its WAL."""
    base = restore_base_dir(ctx)
    if (base / "PG_VERSION").exists():
        return
    with connect(superuser_dsn(ctx, "primary")) as conn:
        if conn.execute("SHOW archive_mode").fetchone()[0] != "on":
            return  # a primary started before archiving was configured: restarted, it takes one
    shutil.rmtree(base, ignore_errors=True)
    _run_as_postgres(
        [str(PG_BIN / "pg_basebackup"), "-h", HOST, "-p", str(_port(ctx, "primary")),
         "-U", REPLICATION_USER, "-D", str(base), "-X", "stream", "-c", "fast", "--no-sync"],
        "pg_basebackup of the sandbox's restore base from the primary",
        env={"PGPASSWORD": REPLICATION_PASSWORD, "PGCONNECT_TIMEOUT": str(CONNECT_TIMEOUT_S)},
    )
    (base.parent / "restore-base.taken").write_text(datetime.now(UTC).isoformat())


def restore_base_time(ctx: SandboxContext) -> datetime | None:
    """When the restore base was taken (the earliest point a restore can reach), or None."""
    stamp = base_dir(ctx) / "restore-base.taken"
    return datetime.fromisoformat(stamp.read_text()) if stamp.exists() else None


def _archive_past(ctx: SandboxContext, at: datetime) -> None:
    """The primary's WAL archived past ``at``, a commit after it included (recovery stops at the
    first commit after its target; without one it would end short of it and refuse to open)."""
    with connect(superuser_dsn(ctx, "primary")) as conn:
        conn.execute("SELECT txid_current()")  # a commit stamped now, after ``at``
        segment = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]

    def archived() -> bool:
        with connect(superuser_dsn(ctx, "primary")) as conn:
            last, failed = conn.execute(
                "SELECT last_archived_wal, last_failed_wal FROM pg_stat_archiver").fetchone()
        if failed and failed >= segment:
            raise SandboxError(f"the primary could not archive WAL {failed}; see its log")
        return bool(last) and last >= segment

    wait_until(archived, timeout=START_TIMEOUT_S, what=f"WAL {segment} archived")


def ensure_restored(ctx: SandboxContext, name: str, at: datetime) -> int:
    """A running PostgreSQL for the instance ``name`` restored to the point in time ``at`` (the
    snapshot's time): the restore base replayed from the WAL archive to ``at``, then promoted.
    Made the first time it is asked for; returns its port. A point before the restore base (the
    sandbox cannot reach back further) is refused before anything is made."""
    data = restored_dir(ctx, name)
    proc = f"postgres_restored_{name}"
    if pid_from_pidfile(data / "postmaster.pid", "postgres") is not None:
        return restored_port(ctx, name)
    recovery = ""
    if not (data / "PG_VERSION").exists():
        taken = restore_base_time(ctx)
        if taken is None:
            raise SandboxError("the sandbox primary keeps no restore base (it was started before WAL "
                               "archiving was configured): restart the sandbox (down, then up)")
        if at < taken:
            raise SandboxError(f"cannot restore {name} to {at.isoformat()}: the sandbox's WAL archive "
                               f"begins at its restore base, taken {taken.isoformat()}")
        _archive_past(ctx, at)
        user = _pg_user()
        data.parent.mkdir(parents=True, exist_ok=True)
        os.chown(data.parent, user.pw_uid, user.pw_gid)
        data.parent.chmod(0o700)
        shutil.rmtree(data, ignore_errors=True)
        _run_as_postgres(["cp", "-a", str(restore_base_dir(ctx)), str(data)],
                         f"copy of the restore base for {name}")
        (data / "recovery.signal").touch()
        os.chown(data / "recovery.signal", user.pw_uid, user.pw_gid)
        archive = str(wal_archive_dir(ctx)).replace("'", "''")
        target = at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")
        recovery = (f"restore_command = 'gunzip < {archive}/%f.gz > %p'\nrecovery_target_time = '{target}'\n"
                    "recovery_target_action = 'promote'\n")
    port = restored_port(ctx, name)
    stop_process(ctx, proc)
    # The recovery settings only count while recovery.signal is there (until the promotion).
    _write_config_files(ctx, data, port, f"restored-{name}", recovery)
    start_process(ctx, proc, [str(PG_BIN / "postgres"), "-D", str(data)], user=OS_USER)
    dsn_ = make_conninfo(host=str(socket_dir(ctx)), port=port, user=SUPERUSER, dbname="postgres",
                         connect_timeout=CONNECT_TIMEOUT_S)

    def promoted() -> bool:
        if read_pid(ctx, proc) is not None and not pid_alive(read_pid(ctx, proc)):
            raise SandboxError(f"restored instance {name} exited; see {ctx.log_dir / (proc + '.log')}")
        with connect(dsn_, connect_timeout=2) as conn:
            return not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]

    wait_until(promoted, timeout=START_TIMEOUT_S, what=f"restored instance {name} on {HOST}:{port}")
    return port


def stop_restored(ctx: SandboxContext, name: str, *, remove: bool = False) -> None:
    data = restored_dir(ctx, name)
    pid = pid_from_pidfile(data / "postmaster.pid", "postgres")
    if pid is not None:
        os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + 30
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
    stop_process(ctx, f"postgres_restored_{name}")
    if remove:
        shutil.rmtree(data, ignore_errors=True)
        (data.parent / f"{name}.port").unlink(missing_ok=True)
