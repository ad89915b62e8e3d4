"""The step wrapper, run without a scheduler on a stand-in task context: what it records for the
report, how a failed check fails (once, with what was checked, seen and expected), the fencing
check of the change lock before the step's own code, and a wait that runs out of time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import boto3
import pytest
from airflow.sdk.exceptions import AirflowFailException
from moto import mock_aws

from bisman_ops.change import lock
from bisman_ops.change import step as step_module
from bisman_ops.change.errors import CheckFailed
from bisman_ops.change.step import RECORD_KEY, Poke, Result, step


class FakeTI:
    def __init__(self, task_id="core_infrastructure.check", first_poke=None):
        self.dag_id, self.run_id, self.task_id = "bisman_rollout", "manual__1", task_id
        self.pushed: dict = {}
        self._first_poke = first_poke

    def xcom_push(self, key, value):
        self.pushed[key] = value

    def get_first_reschedule_date(self, context):
        return self._first_poke


@pytest.fixture
def ctx(monkeypatch):
    ti = FakeTI()
    context = {"ti": ti, "params": {"environment": "staging", "project_name": "bisman-erp", "wait_s": 30}}
    monkeypatch.setattr(step_module, "context", lambda: context)
    return context


@pytest.fixture
def ddb(monkeypatch):
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        client.create_table(TableName="bisman-erp-staging-terraform-locks",
                            KeySchema=[{"AttributeName": "LockID", "KeyType": "HASH"}],
                            AttributeDefinitions=[{"AttributeName": "LockID", "AttributeType": "S"}],
                            BillingMode="PAY_PER_REQUEST")
        monkeypatch.setattr(lock, "_dynamodb", lambda: client)
        yield client


def test_a_step_returns_its_value_and_records_what_it_measured_redacted(ctx):
    @step(lease=False)
    def measure(x: int) -> Result:
        return Result(value={"x": x}, measured={"lag_s": 0.2, "password": "hunter2hunter2"})

    assert measure.function(3) == {"x": 3}
    record = ctx["ti"].pushed[RECORD_KEY]
    assert record["measured"] == {"lag_s": 0.2, "password": "***"}
    assert "failure" not in record and record["changed"] is False


def test_a_failed_check_fails_without_retry_naming_what_was_checked_seen_and_expected(ctx):
    @step(lease=False, changes=True)
    def pooled() -> dict:
        raise CheckFailed("connection pooling", "30 servers > pool 20", "servers <= pool size",
                          "fix default_pool_size", {"peak_server_connections": 30,
                                                    "dsn": "postgresql://app:s3cret@db/x"})

    with pytest.raises(AirflowFailException) as failed:
        pooled.function()
    message = str(failed.value)
    assert message.startswith("connection pooling: seen 30 servers > pool 20; expected servers <= pool size")
    assert "s3cret" not in message
    failure = ctx["ti"].pushed[RECORD_KEY]["failure"]
    assert failure["checked"] == "connection pooling" and failure["next_step"] == "fix default_pool_size"
    assert ctx["ti"].pushed[RECORD_KEY]["changed"] is True


def test_any_other_error_is_recorded_and_raised_as_itself_for_the_task_retries(ctx):
    @step(lease=False)
    def flaky() -> dict:
        raise TimeoutError("connect timed out to postgresql://app:s3cret@db/x")

    with pytest.raises(TimeoutError):
        flaky.function()
    assert "s3cret" not in ctx["ti"].pushed[RECORD_KEY]["failure"]["message"]


def test_a_run_that_lost_the_change_lock_stops_before_its_step_changes_anything(ctx, ddb):
    ran = []

    @step(changes=True)
    def apply() -> dict:
        ran.append(True)
        return {}

    table = "bisman-erp-staging-terraform-locks"
    lock.acquire(ddb, table, "staging", "bisman_rollout/manual__1")
    assert apply.function() == {} and ran == [True]  # ours: the lease is renewed and the step runs

    lock.release(ddb, table, "staging", "bisman_rollout/manual__1")
    lock.acquire(ddb, table, "staging", "bisman_rollback_database/manual__2")
    with pytest.raises(AirflowFailException, match="held by bisman_rollout/manual__1"):
        apply.function()
    assert ran == [True]
    assert "bisman_rollback_database/manual__2" in ctx["ti"].pushed[RECORD_KEY]["failure"]["seen"]


def test_a_wait_past_its_param_timeout_fails_with_the_last_thing_seen(ctx):
    @step.sensor(lease=False, timeout_param="wait_s")
    def replica_lag_below_threshold() -> Poke:
        return Poke(False, {"cloudwatch_replica_lag_s": 5.0}, "CloudWatch ReplicaLag 5.00 s >= 1.0 s")

    ctx["ti"]._first_poke = datetime.now(UTC) - timedelta(seconds=10)
    assert replica_lag_below_threshold.function() is False  # 10 s of 30: keep waiting
    assert ctx["ti"].pushed[RECORD_KEY]["measured"] == {"cloudwatch_replica_lag_s": 5.0}

    ctx["ti"]._first_poke = datetime.now(UTC) - timedelta(seconds=31)
    with pytest.raises(AirflowFailException) as failed:
        replica_lag_below_threshold.function()
    assert "timed out after 30 s" in str(failed.value)
    assert "CloudWatch ReplicaLag 5.00 s >= 1.0 s" in str(failed.value)


def test_a_wait_that_is_done_returns_its_measurement():
    poke = Poke(True, {"status": "available"})
    ti = FakeTI()
    ctx = {"ti": ti, "params": {}}
    step_module_context = step_module.context
    try:
        step_module.context = lambda: ctx

        @step.sensor(lease=False)
        def available() -> Poke:
            return poke

        done = available.function()
    finally:
        step_module.context = step_module_context
    assert done.is_done and done.xcom_value == {"status": "available"}


def test_a_step_longer_than_the_lease_keeps_it_renewed_while_it_runs(ctx, ddb, monkeypatch):
    """issue 23 point 4: the lease was renewed only when a step started, so a step running longer
    than the lease lost the lock under it."""
    import time

    monkeypatch.setenv(lock.LEASE_ENV, "3")  # renewed every second
    table = "bisman-erp-staging-terraform-locks"
    lock.acquire(ddb, table, "staging", "bisman_rollout/manual__1", lease_seconds=3)

    @step(changes=True)
    def long_apply() -> dict:
        time.sleep(4.5)
        return {"applied": True}

    assert long_apply.function() == {"applied": True}
    held = lock.current(ddb, table, "staging")
    assert held.owner == "bisman_rollout/manual__1" and not held.expired()


def test_a_step_whose_lock_was_taken_over_while_it_ran_fails_naming_the_new_holder(ctx, ddb, monkeypatch):
    import time

    monkeypatch.setenv(lock.LEASE_ENV, "3")
    table = "bisman-erp-staging-terraform-locks"
    lock.acquire(ddb, table, "staging", "bisman_rollout/manual__1", lease_seconds=3)

    @step(changes=True)
    def long_apply() -> dict:
        lock.release(ddb, table, "staging", "bisman_rollout/manual__1")  # expired and taken over
        lock.acquire(ddb, table, "staging", "bisman_rollback_database/manual__2")
        time.sleep(2.5)
        return {"applied": True}

    with pytest.raises(AirflowFailException, match="now held by bisman_rollback_database/manual__2"):
        long_apply.function()
    assert ctx["ti"].pushed[RECORD_KEY]["changed"] is True  # the report says it may have changed things
