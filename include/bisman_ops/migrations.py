"""Versioned SQL migrations: the stand-in for the application's ``prisma migrate deploy``.

Files ``include/sql/migrations/NNNN_name.sql`` are applied in version order, each in its own
transaction, and recorded in ``schema_migrations``. A session-level advisory lock serialises
concurrent runners, so run this against the primary directly, not through PgBouncer's
transaction pool (which would hand the lock's session to someone else). An applied file is
immutable: if its checksum changed, nothing is applied and the error names the file.

    python -m bisman_ops.migrations --dsn postgresql://... [--dry-run]

The DSN may also come from ``DATABASE_URL`` (as prisma reads it), which keeps the password off
the command line.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

MIGRATIONS_DIR = Path(__file__).resolve().parents[1] / "sql" / "migrations"
# Any fixed 64-bit key; the same in every runner is all that matters.
ADVISORY_LOCK_KEY = 0x6269736D616E  # "bisman"
CONNECT_TIMEOUT_S = 10
DEFAULT_LOCK_WAIT_S = 60.0
_FILE_RE = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    text        PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(RuntimeError):
    """The migrations cannot be applied as they stand; the message says which file and why."""


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    path: Path
    checksum: str

    @property
    def filename(self) -> str:
        return self.path.name

    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migration files in ``directory``, in version order."""
    directory = Path(directory)
    if not directory.is_dir():
        raise MigrationError(f"migrations folder {directory} does not exist")
    found: dict[str, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        m = _FILE_RE.match(path.name)
        if not m:
            raise MigrationError(f"migration file {path.name} is misnamed; expected NNNN_lowercase_name.sql")
        version = m["version"]
        if version in found:
            raise MigrationError(
                f"migration version {version} is used by both {found[version].filename} and {path.name}"
            )
        checksum = hashlib.sha256(path.read_bytes()).hexdigest()
        found[version] = Migration(version, m["name"], path, checksum)
    return [found[v] for v in sorted(found)]


def applied_versions(conn_or_dsn: psycopg.Connection | str) -> list[str]:
    """Versions recorded in ``schema_migrations`` (empty if the table does not exist yet)."""
    with _connection(conn_or_dsn) as conn:
        return sorted(_recorded(conn))


def pending(conn_or_dsn: psycopg.Connection | str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Versions that ``migrate`` would apply; raises MigrationError if an applied file changed."""
    return migrate(conn_or_dsn, directory, dry_run=True)


def migrate(
    conn_or_dsn: psycopg.Connection | str,
    directory: Path = MIGRATIONS_DIR,
    *,
    dry_run: bool = False,
    lock_wait_s: float = DEFAULT_LOCK_WAIT_S,
    log=None,
) -> list[str]:
    """Apply the pending migrations in order; return the versions applied (or, dry, to apply).

    ``log`` is called with one line per migration (the CLI prints them).
    """
    migrations = discover(directory)
    say = log or (lambda _line: None)
    with _connection(conn_or_dsn) as conn:
        if dry_run:
            todo = _pending(migrations, _recorded(conn))
            for m in todo:
                say(f"would apply {m.filename}")
            return [m.version for m in todo]
        with _advisory_lock(conn, lock_wait_s):
            conn.execute(_CREATE_TABLE)
            # Read what is recorded only once we hold the lock: another runner may just have finished.
            todo = _pending(migrations, _recorded(conn))
            done: list[str] = []
            for m in todo:
                try:
                    with conn.transaction():
                        conn.execute(m.sql())
                        conn.execute(
                            "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                            (m.version, m.name, m.checksum),
                        )
                except psycopg.Error as exc:
                    applied = ", ".join(done) or "none"
                    raise MigrationError(
                        f"migration {m.filename} failed and was rolled back: "
                        f"{exc.diag.message_primary or exc}; applied before it in this run: {applied}; "
                        "fix the file and run again"
                    ) from exc
                say(f"applied {m.filename}")
                done.append(m.version)
            return done


def _pending(migrations: list[Migration], recorded: dict[str, tuple[str, str]]) -> list[Migration]:
    for m in migrations:
        if m.version not in recorded:
            continue
        name, checksum = recorded[m.version]
        if checksum != m.checksum or name != m.name:
            raise MigrationError(
                f"migration {m.filename} was applied as {m.version}_{name}.sql with checksum "
                f"{checksum[:12]}, but the file now has checksum {m.checksum[:12]}; applied migrations "
                "are immutable: restore the file and put the change in a new migration"
            )
    return [m for m in migrations if m.version not in recorded]


def _recorded(conn: psycopg.Connection) -> dict[str, tuple[str, str]]:
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()[0]
    if not exists:
        return {}
    rows = conn.execute("SELECT version, name, checksum FROM schema_migrations").fetchall()
    return {version: (name, checksum) for version, name, checksum in rows}


@contextmanager
def _connection(conn_or_dsn: psycopg.Connection | str) -> Iterator[psycopg.Connection]:
    """An autocommit connection: each migration then gets a real transaction of its own."""
    if isinstance(conn_or_dsn, str):
        from bisman_ops.clients import postgres

        with postgres.connect_dsn(conn_or_dsn, autocommit=True, application_name="bisman-migrations") as conn:
            yield conn
        return
    conn = conn_or_dsn
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise MigrationError("the connection given has a transaction open; commit or roll it back first")
    was_autocommit = conn.autocommit
    conn.autocommit = True
    try:
        yield conn
    finally:
        if conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            conn.autocommit = was_autocommit


@contextmanager
def _advisory_lock(conn: psycopg.Connection, wait_s: float) -> Iterator[None]:
    deadline = time.monotonic() + wait_s
    while not conn.execute("SELECT pg_try_advisory_lock(%s)", (ADVISORY_LOCK_KEY,)).fetchone()[0]:
        if time.monotonic() > deadline:
            raise MigrationError(
                f"another migration runner held the lock (pg advisory lock {ADVISORY_LOCK_KEY}) for more "
                f"than {wait_s:.0f} s; check pg_locks for the session holding it, then retry"
            )
        time.sleep(0.2)
    try:
        yield
    finally:
        if not conn.closed:
            conn.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bisman_ops.migrations", description="Apply the pending SQL migrations."
    )
    parser.add_argument("--dsn", default=os.environ.get("DATABASE_URL"), help="defaults to $DATABASE_URL")
    parser.add_argument("--dir", type=Path, default=MIGRATIONS_DIR, help="migrations folder")
    parser.add_argument("--dry-run", action="store_true", help="print what would be applied, change nothing")
    parser.add_argument("--lock-wait", type=float, default=DEFAULT_LOCK_WAIT_S, help="seconds")
    args = parser.parse_args(argv)
    if not args.dsn:
        parser.error("give --dsn or set DATABASE_URL")
    try:
        versions = migrate(args.dsn, args.dir, dry_run=args.dry_run, lock_wait_s=args.lock_wait, log=print)
    except (MigrationError, psycopg.OperationalError) as exc:
        print(f"migrations: {exc}", file=sys.stderr)
        return 1
    if not versions:
        print("nothing to apply")
    return 0


if __name__ == "__main__":
    sys.exit(main())
