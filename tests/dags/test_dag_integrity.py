"""DAG integrity: every DAG file imports, ids and schedules match the contract, every task retries,
no heavy client library is imported at parse time, and the forms refuse bad values."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from airflow.sdk.definitions.param import ParamsDict

from bisman_ops.change.report import in_run_order
from bisman_ops.dag_defaults import cron_from_env

ROOT = Path(__file__).resolve().parents[2]
DAGS_DIR = ROOT / "dags"

# CONTRACT.md, "DAGs": id -> (cron or None for manual, environment variable).
CONTRACT = {
    "bisman_rollout": (None, None),
    "bisman_daily_usage_aggregation": ("0 2 * * *", "DAILY_AGGREGATION_CRON"),
    "bisman_trial_expiry": ("0 * * * *", "TRIAL_EXPIRY_CRON"),
    "bisman_quota_alerts": ("30 * * * *", "QUOTA_ALERT_CRON"),
    "bisman_weekly_audit": ("0 0 * * 0", "WEEKLY_AUDIT_CRON"),
    "bisman_rollback_application": (None, None),
    "bisman_rollback_database": (None, None),
    "bisman_rollback_infrastructure": (None, None),
}
MANUAL = [dag_id for dag_id, (cron, _) in CONTRACT.items() if cron is None]
ROLLBACKS = [dag_id for dag_id in CONTRACT if dag_id.startswith("bisman_rollback_")]
HEAVY_CLIENTS = ("boto3", "botocore", "stripe", "psycopg", "psycopg2", "redis", "requests")


def load_dagbag(monkeypatch=None, env: dict | None = None):
    from airflow.dag_processing.dagbag import DagBag

    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
    return DagBag(dag_folder=str(DAGS_DIR))


@pytest.fixture(scope="module")
def dagbag():
    return load_dagbag()


def test_every_dag_file_imports_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert len(list(DAGS_DIR.glob("*.py"))) == len(CONTRACT)


def test_dag_ids_are_exactly_the_contracts(dagbag):
    assert set(dagbag.dag_ids) == set(CONTRACT)


@pytest.mark.parametrize("dag_id", sorted(CONTRACT))
def test_schedule_matches_contract_in_utc(dagbag, dag_id):
    dag = dagbag.dags[dag_id]
    cron, _ = CONTRACT[dag_id]
    if cron is None:
        assert dag.timetable.__class__.__name__ == "NullTimetable"
    else:
        assert dag.timetable.expression == cron
        assert str(dag.timetable.timezone) == "UTC"


def test_daily_aggregation_uses_data_intervals_so_backfills_aggregate_their_own_day(dagbag):
    timetable = dagbag.dags["bisman_daily_usage_aggregation"].timetable
    assert timetable.__class__.__name__ == "CronDataIntervalTimetable"


def test_schedule_is_taken_from_its_environment_variable(monkeypatch):
    bag = load_dagbag(monkeypatch, {"QUOTA_ALERT_CRON": "45 * * * *", "WEEKLY_AUDIT_CRON": "0 3 * * 1"})
    assert bag.dags["bisman_quota_alerts"].timetable.expression == "45 * * * *"
    assert bag.dags["bisman_weekly_audit"].timetable.expression == "0 3 * * 1"


@pytest.mark.parametrize("value", ["every hour", "61 * * * *", "* * *"])
def test_malformed_cron_in_environment_is_refused_naming_the_variable(value):
    with pytest.raises(ValueError, match="TRIAL_EXPIRY_CRON"):
        cron_from_env("TRIAL_EXPIRY_CRON", {"TRIAL_EXPIRY_CRON": value})


@pytest.mark.parametrize("dag_id", sorted(CONTRACT))
def test_dag_has_owner_tags_docs_and_deliberate_settings(dagbag, dag_id):
    dag = dagbag.dags[dag_id]
    assert dag.tags and "bisman" in dag.tags
    assert dag.doc_md and len(dag.doc_md) > 200
    assert dag.default_args.get("owner") not in (None, "airflow")
    assert dag.default_args.get("retry_exponential_backoff")
    assert dag.max_active_runs == 1
    assert dag.catchup is False


@pytest.mark.parametrize("dag_id", sorted(CONTRACT))
def test_every_task_retries_but_a_damaging_step_whose_restore_runs_first(dagbag, dag_id):
    dag = dagbag.dags[dag_id]
    for task in dag.tasks:
        if task.retries == 0:
            # Not retried on its own: its restore (a teardown of the intent before it) runs first.
            intents = [dag.get_task(u) for u in task.upstream_task_ids if dag.get_task(u).is_setup]
            restores = [dag.get_task(d) for d in task.downstream_task_ids if dag.get_task(d).is_teardown]
            assert any(i.task_id in r.upstream_task_ids for i in intents for r in restores), (
                f"{dag_id}.{task.task_id} has no retries and no restore")
        else:
            assert task.retries >= 1, f"{dag_id}.{task.task_id} has no retries"


# One fresh interpreter imports airflow.sdk once, then forks a child per DAG file: each child starts
# from that clean state, so what it adds to sys.modules is what its DAG file imports at parse time.
PARSE_PROBE = """
import json, os, runpy, sys
import airflow.sdk
heavy, files = json.loads(sys.argv[1]), json.loads(sys.argv[2])
found = {}
for path in files:
    read, write = os.pipe()
    if os.fork() == 0:
        os.close(read)
        before = set(sys.modules)
        try:
            runpy.run_path(path)
            result = sorted(m for m in heavy if m in sys.modules and m not in before)
        except BaseException as exc:
            result = f"import failed: {exc!r}"
        os.write(write, json.dumps(result).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        found[os.path.basename(path)] = json.loads(pipe.read() or '"child died"')
    os.wait()
print(json.dumps(found))
"""


@pytest.mark.parametrize("dag_id", sorted(CONTRACT))
def test_rescheduled_sensors_look_no_more_often_than_airflow_can_follow(dagbag, dag_id):
    # A next look queued before the scheduler took the last one's event fails the try (Airflow 3.3).
    from bisman_ops.change.step import RESCHEDULE_FLOOR

    sensors = [t for t in dagbag.get_dag(dag_id).tasks if getattr(t, "mode", None) == "reschedule"]
    too_often = {t.task_id: t.poke_interval for t in sensors
                 if t.poke_interval < RESCHEDULE_FLOOR.total_seconds()}
    assert too_often == {}


@pytest.fixture(scope="module")
def parse_time_imports() -> dict:
    files = [str(p) for p in sorted(DAGS_DIR.glob("*.py"))]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "include")}
    argv = [sys.executable, "-c", PARSE_PROBE, json.dumps(sorted(HEAVY_CLIENTS)), json.dumps(files)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("dag_file", sorted(p.name for p in DAGS_DIR.glob("*.py")))
def test_dag_file_imports_no_client_library_at_parse_time(parse_time_imports, dag_file):
    assert parse_time_imports[dag_file] == []


def _validate(dag, conf: dict) -> dict:
    params = ParamsDict(copy.deepcopy(dag.params))  # update() would change the shared DAG's defaults
    params.update(conf)
    return params.validate()


@pytest.mark.parametrize("dag_id", MANUAL)
def test_manual_dag_forms_reject_unknown_environment(dagbag, dag_id):
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError, match="environment"):
        _validate(dagbag.dags[dag_id], {"environment": "production", "reason": "INC-1 broken deploy",
                                        "confirm": "x"})


@pytest.mark.parametrize(
    ("dag_id", "field", "value"),
    [
        ("bisman_rollout", "project_name", "Bisman ERP"),
        ("bisman_rollout", "domain_name", "not a domain"),
        ("bisman_rollout", "db_instance_class", "r6g.large"),
        ("bisman_rollback_application", "task_definition", "bisman-erp-staging-app"),
        ("bisman_rollback_application", "service", "svc; rm -rf /"),
        ("bisman_rollback_database", "db_instance_identifier", "1-starts-with-digit"),
        ("bisman_rollback_database", "snapshot_identifier", "snap shot"),
        ("bisman_rollback_infrastructure", "git_ref", "--upload-pack=evil"),
    ],
)
def test_manual_dag_forms_reject_malformed_identifiers(dagbag, dag_id, field, value):
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError, match=field):
        _validate(dagbag.dags[dag_id], {field: value, "reason": "INC-1 broken deploy", "confirm": "x"})


@pytest.mark.parametrize("dag_id", ROLLBACKS)
def test_rollback_forms_require_reason_and_confirmation(dagbag, dag_id):
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError):
        _validate(dagbag.dags[dag_id], {})
    resolved = _validate(dagbag.dags[dag_id], {"reason": "INC-42 bad release", "confirm": "anything"})
    assert resolved["environment"] == "staging"


@pytest.mark.parametrize("dag_id", MANUAL)
def test_manual_dag_form_fields_are_typed_and_described(dagbag, dag_id):
    for name in dagbag.dags[dag_id].params:
        schema = dagbag.dags[dag_id].params.get_param(name).schema
        assert "type" in schema, f"{dag_id}.{name} has no JSON-schema type"
        assert schema.get("title") or schema.get("description"), f"{dag_id}.{name} is not described"


CHANGE_DAGS = ("bisman_rollout", "bisman_rollback_application", "bisman_rollback_database",
               "bisman_rollback_infrastructure")


def _worst_case(task) -> timedelta | None:
    """How long a task can take at most, all its tries: a wait its Airflow timeout per try (one
    look bounded by execution_timeout), any other task its execution_timeout per try."""
    tries = (task.retries or 0) + 1
    is_sensor = hasattr(task, "poke_interval") and hasattr(task, "mode")
    one = timedelta(seconds=task.timeout) if is_sensor else task.execution_timeout
    if one is None:
        return None
    delays = (task.retries or 0) * (task.max_retry_delay or task.retry_delay or timedelta(0))
    return tries * one + delays


@pytest.mark.parametrize("dag_id", CHANGE_DAGS)
def test_every_task_of_a_change_dag_is_bounded_and_the_run_bound_never_cuts_a_restore(dagbag, dag_id):
    """issue 23 point 4. At dagrun_timeout Airflow marks every unfinished task skipped, restores and
    the lock release included: the run's bound must lie beyond the longest path of its tasks' bounds,
    so it only ends a run the scheduler stopped moving."""
    dag = dagbag.dags[dag_id]
    unbounded = [t.task_id for t in dag.tasks if _worst_case(t) is None]
    assert unbounded == []
    for t in dag.tasks:
        if getattr(t, "response_timeout", None):  # an approval: its bound also ends its wait
            assert t.execution_timeout > t.response_timeout, t.task_id
        if hasattr(t, "poke_interval") and hasattr(t, "mode"):
            assert t.timeout <= timedelta(hours=7).total_seconds(), t.task_id
    longest: dict[str, timedelta] = {}
    for t in in_run_order(list(dag.tasks)):
        longest[t.task_id] = _worst_case(t) + max((longest[u] for u in t.upstream_task_ids),
                                                  default=timedelta(0))
    assert dag.dagrun_timeout is not None
    assert dag.dagrun_timeout > max(longest.values())
