"""Phase 2's checks without a scheduler: the lag verdict (SQL lag over the threshold, stale or
missing CloudWatch data), the SQL probe against the sandbox's real primary and replica, routing and
fallback that the application gets wrong, and which replica control is used."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from types import SimpleNamespace

import boto3
import pytest
from moto import mock_aws

from bisman_ops import config
from bisman_ops.change.errors import CheckFailed
from bisman_ops.rollout import read_replica as rr

FRESH = {"value": 0.2, "age_s": 30.0}
LOG_GROUP = "/ecs/bisman-erp-staging"


def test_lag_under_the_threshold_on_both_measures_passes():
    poke = rr.lag_verdict("replica", 1.0, FRESH, {"value": 0.05, "replayed": True})
    assert poke.done and poke.measured["sql_replay_lag_s"] == 0.05


def test_sql_lag_over_the_threshold_keeps_the_gate_waiting_and_says_so():
    poke = rr.lag_verdict("replica", 1.0, FRESH, {"value": 2.5, "replayed": False})
    assert not poke.done
    assert "SQL replay lag 2.50 s >= 1.0 s" in poke.waiting_for


@pytest.mark.parametrize(("cloudwatch", "sql", "reason"), [
    ({"value": 5.0, "age_s": 30.0}, {"value": 0.1}, "CloudWatch ReplicaLag 5.00 s >= 1.0 s"),
    ({"value": 0.1, "age_s": 600.0}, {"value": 0.1},
     "no fresh CloudWatch ReplicaLag datapoint (latest age 600.0 s)"),
    ({"value": None, "age_s": None}, {"value": 0.1}, "no fresh CloudWatch ReplicaLag datapoint"),
    (FRESH, {"value": None, "replayed": False, "error": "OperationalError"},
     "replica unreachable by SQL (OperationalError)"),
])
def test_lag_not_shown_under_the_threshold_names_why(cloudwatch, sql, reason):
    poke = rr.lag_verdict("replica", 1.0, cloudwatch, sql)
    assert not poke.done and reason in poke.waiting_for


def test_sql_probe_times_the_replay_of_a_write_on_the_sandboxs_replica(ctx, monkeypatch):
    from bisman_sandbox import launcher

    for key, value in launcher.airflow_connection_env(ctx).items():
        monkeypatch.setenv(key, value)
    lag = rr.sql_replica_lag(config.APP_DB_PRIMARY_CONN_ID, config.APP_DB_REPLICA_CONN_ID, wait_s=5.0)
    assert lag["replayed"] is True and lag["value"] < 5.0


# -- routing and fallback, with the application and its logs stood in --------------------------------


class App:
    """The application's API as the check sees it: a read's route, a write's updated_at."""

    def __init__(self, logs, read_route="replica", read_status=200,
                 write_updated_at="2026-01-01T10:00:00+00:00", log_routes=True):
        self.logs, self.read_route, self.read_status = logs, read_route, read_status
        self.write_updated_at, self.log_routes = write_updated_at, log_routes

    def __call__(self, method, path, headers):
        request_id = headers.get("X-Request-Id", "")
        if path == "/health":
            return SimpleNamespace(status_code=200, json=lambda: {})
        if method == "GET":
            if self.log_routes:
                self.logs.lines.append(f"db_route={self.read_route} request_id={request_id}")
            return SimpleNamespace(status_code=self.read_status, json=lambda: {"route": self.read_route})
        self.logs.lines.append(f"db_route=primary-write request_id={request_id}")
        return SimpleNamespace(status_code=200, json=lambda: {"updated_at": self.write_updated_at})


class Logs:
    def __init__(self):
        self.lines: list[str] = []

    def filter_log_events(self, **kwargs):
        return {"events": [{"message": line} for line in self.lines]}


class Primary:
    def __init__(self, updated_at):
        self.updated_at = updated_at

    def execute(self, sql, args=()):
        return SimpleNamespace(fetchone=lambda: (self.updated_at,))


ON_PRIMARY = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def quick_log_wait(monkeypatch):
    monkeypatch.setattr(rr, "LOG_WAIT_S", 0.0)


def test_reads_on_the_replica_and_writes_on_the_primary_pass():
    logs = Logs()
    measured = rr.verify_routing(App(logs), "token", logs, LOG_GROUP, 1, Primary(ON_PRIMARY))
    assert measured["write_seen_on_primary"] and measured["attempt"] == 1


def test_reads_served_by_the_primary_fail_routing_after_every_probe():
    logs = Logs()
    with pytest.raises(CheckFailed) as failed:
        rr.verify_routing(App(logs, read_route="primary"), "token", logs, LOG_GROUP, 1, Primary(ON_PRIMARY))
    assert "no 'db_route=replica' line" in failed.value.seen
    assert "the application answered route='primary'" in failed.value.seen
    assert failed.value.measured["attempt"] == 3


def test_a_write_not_found_on_the_primary_fails_routing():
    logs = Logs()
    elsewhere = datetime(2025, 12, 31, tzinfo=UTC)
    with pytest.raises(CheckFailed, match="is not on the primary"):
        rr.verify_routing(App(logs), "token", logs, LOG_GROUP, 1, Primary(elsewhere), attempts=1)


def test_fallback_passes_when_reads_are_answered_from_the_primary():
    logs = Logs()
    measured = rr.verify_fallback(App(logs, read_route="fallback"), "token", logs, LOG_GROUP, 1)
    assert measured["read_route"] == "fallback" and measured["fallback_log_line"]


def test_fallback_fails_when_reads_fail_or_are_not_logged_as_fallback():
    logs = Logs()
    with pytest.raises(CheckFailed, match="the read answered 503 with the replica down"):
        rr.verify_fallback(App(logs, read_status=503), "token", logs, LOG_GROUP, 1)
    with pytest.raises(CheckFailed, match="no 'db_route=fallback' line"):
        rr.verify_fallback(App(logs, read_route="replica"), "token", logs, LOG_GROUP, 1)


# -- the replica control ---------------------------------------------------------------------------------


@dataclass
class OwnReplicaControl(rr.RdsRebootControl):
    """A deployment's own control, registered by configuration."""

    name: str = "own"


def test_the_rds_reboot_is_the_default_and_a_deployment_registers_its_own_by_configuration():
    assert isinstance(rr.replica_control(None, "r", environ={}), rr.RdsRebootControl)
    spec = {"BISMAN_IMPL_REPLICA_CONTROL": f"{__name__}:OwnReplicaControl"}
    control = rr.replica_control(None, "r", environ=spec)
    assert control.name == "own" and isinstance(control, rr.RdsRebootControl)
    with pytest.raises(ValueError, match="BISMAN_IMPL_REPLICA_CONTROL"):
        rr.replica_control(None, "r", environ={"BISMAN_IMPL_REPLICA_CONTROL": "no.such.module:X"})


def test_the_rds_control_reboots_the_replica_and_restore_waits_until_it_is_available(monkeypatch):
    monkeypatch.setattr(rr, "RESTORE_POLL_S", 1)
    with mock_aws():
        rds = boto3.client("rds", region_name="us-east-1")
        rds.create_db_instance(DBInstanceIdentifier="bisman-erp-staging-replica", Engine="postgres",
                               DBInstanceClass="db.r6g.large", MasterUsername="u",
                               MasterUserPassword="p" * 12, AllocatedStorage=20)
        control = rr.RdsRebootControl(rds, "bisman-erp-staging-replica")
        assert control.take_down()["rebooted"] == "bisman-erp-staging-replica"
        assert control.restore()["status"] == "available"
