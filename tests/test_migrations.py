"""Migrations against a real PostgreSQL: the sandbox primary, one scratch database per test."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import psycopg
import pytest

from bisman_ops import migrations
from bisman_ops.migrations import MigrationError
from bisman_sandbox import context, postgres
from bisman_sandbox.context import SandboxContext

pytestmark = [pytest.mark.sandbox, pytest.mark.timeout(120)]
PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ctx() -> SandboxContext:
    c = SandboxContext.from_env()
    postgres.up(c)
    return c


@pytest.fixture
def scratch_dsn(ctx):
    """A fresh database owned by the application role, dropped afterwards."""
    name = f"mig_test_{uuid.uuid4().hex[:10]}"
    with postgres.connect(postgres.superuser_dsn(ctx)) as conn:
        conn.execute(f'CREATE DATABASE "{name}" OWNER "{context.DB_USER}"')
    yield postgres.dsn(ctx, "primary", dbname=name)
    with postgres.connect(postgres.superuser_dsn(ctx)) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def write(folder: Path, filename: str, sql: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / filename
    path.write_text(sql)
    return path


def tables(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    return {r[0] for r in rows}


def test_migrations_apply_in_version_order_and_are_recorded_with_checksums(scratch_dsn, tmp_path):
    # 0002 depends on 0001; a wrong order would fail.
    write(tmp_path, "0002_add_child.sql", "CREATE TABLE child (id int REFERENCES parent (id));")
    write(tmp_path, "0001_add_parent.sql", "CREATE TABLE parent (id int PRIMARY KEY);")

    applied = migrations.migrate(scratch_dsn, tmp_path)

    assert applied == ["0001", "0002"]
    with psycopg.connect(scratch_dsn) as conn:
        rows = conn.execute(
            "SELECT version, name, checksum FROM schema_migrations ORDER BY version"
        ).fetchall()
    expected = [(m.version, m.name, m.checksum) for m in migrations.discover(tmp_path)]
    assert rows == expected
    assert {"parent", "child", "schema_migrations"} <= tables(scratch_dsn)


def test_rerun_applies_nothing_and_a_new_file_applies_alone(scratch_dsn, tmp_path):
    write(tmp_path, "0001_add_parent.sql", "CREATE TABLE parent (id int PRIMARY KEY);")
    assert migrations.migrate(scratch_dsn, tmp_path) == ["0001"]

    assert migrations.migrate(scratch_dsn, tmp_path) == []

    write(tmp_path, "0002_add_child.sql", "CREATE TABLE child (id int);")
    assert migrations.migrate(scratch_dsn, tmp_path) == ["0002"]
    assert migrations.applied_versions(scratch_dsn) == ["0001", "0002"]


def test_changed_checksum_of_applied_file_is_refused_naming_the_file(scratch_dsn, tmp_path):
    first = write(tmp_path, "0001_add_parent.sql", "CREATE TABLE parent (id int PRIMARY KEY);")
    migrations.migrate(scratch_dsn, tmp_path)
    first.write_text("CREATE TABLE parent (id bigint PRIMARY KEY);")
    write(tmp_path, "0002_add_child.sql", "CREATE TABLE child (id int);")

    with pytest.raises(MigrationError, match=re.escape("0001_add_parent.sql")) as err:
        migrations.migrate(scratch_dsn, tmp_path)

    assert "checksum" in str(err.value)
    assert "child" not in tables(scratch_dsn), "nothing may be applied once a checksum mismatches"


def test_failing_migration_rolls_back_alone_and_is_not_recorded(scratch_dsn, tmp_path):
    write(tmp_path, "0001_add_parent.sql", "CREATE TABLE parent (id int PRIMARY KEY);")
    write(tmp_path, "0002_broken.sql", "CREATE TABLE half_done (id int);\nSELECT no_such_function();")

    with pytest.raises(MigrationError, match=re.escape("0002_broken.sql")):
        migrations.migrate(scratch_dsn, tmp_path)

    assert migrations.applied_versions(scratch_dsn) == ["0001"]
    assert "half_done" not in tables(scratch_dsn)


def test_two_concurrent_runners_apply_each_migration_once(scratch_dsn, tmp_path):
    # Not idempotent on purpose: applying it twice would fail with "already exists".
    write(tmp_path, "0001_slow.sql", "SELECT pg_sleep(1);\nCREATE TABLE parent (id int);")
    write(tmp_path, "0002_next.sql", "CREATE TABLE child (id int);")
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(migrations.migrate(scratch_dsn, tmp_path, lock_wait_s=30))
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    assert errors == []
    assert sorted(results) == [[], ["0001", "0002"]]


def test_runner_accepts_a_connection_and_leaves_its_autocommit_setting(scratch_dsn, tmp_path):
    write(tmp_path, "0001_add_parent.sql", "CREATE TABLE parent (id int PRIMARY KEY);")
    with psycopg.connect(scratch_dsn) as conn:
        assert migrations.migrate(conn, tmp_path) == ["0001"]
        assert conn.autocommit is False
    assert "parent" in tables(scratch_dsn)


def test_application_schema_migration_creates_the_contract_tables(scratch_dsn):
    assert migrations.migrate(scratch_dsn) == [m.version for m in migrations.discover()]
    assert {
        "tenants",
        "plan_quotas",
        "tenant_quotas",
        "client_daily_usage",
        "tenant_usage",
        "events",
    } <= tables(scratch_dsn)



def test_usage_rows_get_updated_at_from_the_database_on_every_change(scratch_dsn):
    """issue 23 point 11: the daily aggregation finds late usage by updated_at, so the database sets
    it (whatever the writer sent, or left out), and keeps it when an update changes nothing."""
    migrations.migrate(scratch_dsn)
    with psycopg.connect(scratch_dsn, autocommit=True) as conn:
        def stamp():
            return conn.execute("SELECT updated_at FROM client_daily_usage").fetchone()[0]

        conn.execute("INSERT INTO tenants (id, slug, name, plan, status) "
                     "VALUES (1, 't', 'T', 'free', 'active')")
        before = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        conn.execute("INSERT INTO client_daily_usage (tenant_id, usage_date, metric, quantity, updated_at) "
                     "VALUES (1, '2026-03-01', 'api_calls', 1, '2001-01-01')")
        inserted = stamp()
        assert inserted >= before

        conn.execute("UPDATE client_daily_usage SET quantity = 2")  # updated_at left out
        updated = stamp()
        assert updated > inserted
        conn.execute("UPDATE client_daily_usage SET quantity = 3, updated_at = '2001-01-01'")
        assert stamp() > updated
        restamped = stamp()

        conn.execute("UPDATE client_daily_usage SET quantity = 3")  # no change: nothing to re-read
        assert stamp() == restamped

def run_cli(*args: str, dsn: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bisman_ops.migrations", *args],
        env={"PYTHONPATH": str(PROJECT_ROOT / "include"), "DATABASE_URL": dsn, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_dry_run_prints_pending_files_and_changes_nothing(scratch_dsn, tmp_path):
    write(tmp_path, "0001_add_parent.sql", "CREATE TABLE parent (id int PRIMARY KEY);")

    result = run_cli("--dir", str(tmp_path), "--dry-run", dsn=scratch_dsn)

    assert result.returncode == 0, result.stderr
    assert "would apply 0001_add_parent.sql" in result.stdout
    assert tables(scratch_dsn) == set()


def test_cli_applies_then_reports_nothing_to_apply(scratch_dsn, tmp_path):
    write(tmp_path, "0001_add_parent.sql", "CREATE TABLE parent (id int PRIMARY KEY);")

    first = run_cli("--dir", str(tmp_path), dsn=scratch_dsn)
    second = run_cli("--dir", str(tmp_path), dsn=scratch_dsn)

    assert first.returncode == 0, first.stderr
    assert "applied 0001_add_parent.sql" in first.stdout
    assert second.stdout.strip() == "nothing to apply"


def test_cli_exits_non_zero_on_changed_checksum_without_leaking_the_password(scratch_dsn, tmp_path):
    f = write(tmp_path, "0001_add_parent.sql", "CREATE TABLE parent (id int PRIMARY KEY);")
    assert run_cli("--dir", str(tmp_path), dsn=scratch_dsn).returncode == 0
    f.write_text("-- edited\nCREATE TABLE parent (id int PRIMARY KEY);")

    result = run_cli("--dir", str(tmp_path), dsn=scratch_dsn)

    assert result.returncode == 1
    assert "0001_add_parent.sql" in result.stderr
    assert context.DB_PASSWORD not in result.stderr + result.stdout


def test_misnamed_migration_file_is_refused(tmp_path):
    write(tmp_path, "1_add_parent.sql", "SELECT 1;")
    with pytest.raises(MigrationError, match=re.escape("1_add_parent.sql")):
        migrations.discover(tmp_path)
