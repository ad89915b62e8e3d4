"""The local Airflow's launcher without starting Airflow: its configuration (PostgreSQL metadata,
one set of shared keys per home, kept private), its refusals, and its metadata database started,
migrated-to-be and stopped by PID in a private home."""

from __future__ import annotations

import os
import shutil
import stat

import pytest

from bisman_sandbox.airflow_local import AirflowLocal
from bisman_sandbox.airflow_metadata import MetadataDatabase, keys
from bisman_sandbox.context import SandboxContext
from bisman_sandbox.process import SandboxError, pid_alive, port_open


@pytest.fixture
def home():
    # Under the suite's state folder, not /tmp/pytest-of-root (mode 700): postgres must enter it.
    path = SandboxContext.from_env().state_dir / "airflow-local-test"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    yield path
    MetadataDatabase(path, _free_port_block()).down()
    shutil.rmtree(path, ignore_errors=True)


def _free_port_block() -> int:
    return int(os.environ.get("BISMAN_AIRFLOW_PORT", "8080")) + 100


def test_keys_are_generated_once_per_home_and_private(home):
    first = keys(home)
    assert set(first) == {"db_password", "jwt_secret", "fernet_key", "api_secret_key"}
    assert keys(home) == first
    assert stat.S_IMODE((home / "keys.json").stat().st_mode) == 0o600
    other = home / "other"
    assert keys(other)["jwt_secret"] != first["jwt_secret"]


def test_every_component_shares_one_jwt_secret_and_a_postgres_metadata_database(home):
    af = AirflowLocal(home=home, port=_free_port_block())
    env = af.environment()
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://airflow:")
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == keys(home)["jwt_secret"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert "sqlite" not in " ".join(env.values()).lower()


def test_celery_executor_gets_a_broker_a_database_result_backend_and_named_workers(home):
    af = AirflowLocal(home=home, port=_free_port_block(), executor="CeleryExecutor", celery_workers=2)
    env = af.environment()
    assert env["AIRFLOW__CELERY__BROKER_URL"] == f"redis://127.0.0.1:{af.broker_port}/0"
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://airflow:")
    assert af.worker_names() == ["worker1", "worker2"]
    assert len(set(af.ports())) == len(af.ports()) == 8


@pytest.mark.parametrize(
    ("variable", "value"),
    [("BISMAN_AIRFLOW_EXECUTOR", "SequentialExecutor"), ("BISMAN_AIRFLOW_CELERY_WORKERS", "zero")],
)
def test_bad_launcher_settings_are_refused_naming_the_variable(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SandboxError, match=variable):
        AirflowLocal.from_env()


@pytest.mark.sandbox
def test_metadata_database_starts_accepts_airflows_role_and_stops_by_pid(home):
    import psycopg

    db = MetadataDatabase(home, _free_port_block())
    db.up()
    db.up()  # idempotent: the running cluster is kept
    pid = db._postmaster_pid()
    assert pid is not None and pid_alive(pid)
    url = db.sqlalchemy_url().replace("postgresql+psycopg2://", "postgresql://")
    with psycopg.connect(url, connect_timeout=5) as conn:
        assert conn.execute("SELECT current_user, current_database()").fetchone() == ("airflow", "airflow")
    # The launcher's own metadata database, started ahead (as scripts/test.sh does), is not in its way.
    af = AirflowLocal(home=home, port=_free_port_block() - 4)
    assert db.port == af.metadata.port and db.port not in af.ports_taken_by_others()
    assert db.down()
    assert not pid_alive(pid)
    assert not port_open(db.port)
    assert not list(home.rglob("*.db")), "no SQLite file anywhere in the Airflow home"


def test_the_components_that_fork_tasks_start_with_the_tasks_libraries_imported(home):
    import subprocess
    import sys

    from bisman_sandbox import preloaded_airflow

    af = AirflowLocal(home, _free_port_block())
    for args in (("scheduler",), ("celery", "worker")):
        assert af._airflow(*args)[:3] == [sys.executable, "-m", "bisman_sandbox.preloaded_airflow"]
    assert af._airflow("api-server")[0].endswith("/airflow")
    assert not [m for m in preloaded_airflow.PRELOAD if m.startswith("bisman_sandbox")]
    # The wrapper imports every name, then is Airflow's own command line.
    code = ("import sys, runpy; sys.argv = ['x', 'version']; "
            "runpy.run_module('bisman_sandbox.preloaded_airflow', run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", code + "\n"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **af.database_environment()})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1].startswith("3.")
