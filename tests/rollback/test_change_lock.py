"""The change lock against DynamoDB (the sandbox's moto), on a table of its own per test."""

from __future__ import annotations

import threading
import uuid

import pytest

from bisman_ops import change_lock as cl


@pytest.fixture
def table(clients):
    ddb = clients["dynamodb"]
    name = f"lock-test-{uuid.uuid4().hex[:8]}"
    ddb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "LockID", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "LockID", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    yield ddb, name
    ddb.delete_table(TableName=name)


def test_second_owner_is_refused_with_holder_and_lease_expiry_named(table):
    ddb, name = table
    cl.acquire(ddb, name, "staging", "bisman_rollout/manual__1", lease_seconds=600, clock=lambda: 1000.0)
    with pytest.raises(cl.ChangeLockHeld) as err:
        cl.acquire(ddb, name, "staging", "bisman_rollback_application/manual__2", clock=lambda: 1010.0)
    message = str(err.value)
    assert "bisman_rollout/manual__1" in message
    assert "1970-01-01T00:26:40Z" in message  # expiry 1600 s after the epoch
    assert "in 590 s" in message
    assert cl.current(ddb, name, "staging").owner == "bisman_rollout/manual__1"


def test_same_owner_reacquiring_keeps_the_lock_and_its_start(table):
    ddb, name = table
    first = cl.acquire(ddb, name, "staging", "dag/run", lease_seconds=60, clock=lambda: 100.0)
    again = cl.acquire(ddb, name, "staging", "dag/run", lease_seconds=60, clock=lambda: 130.0)
    assert again.acquired_at == pytest.approx(first.acquired_at)
    assert again.expires_at == pytest.approx(190.0)


def test_expired_lease_is_taken_over(table):
    ddb, name = table
    cl.acquire(ddb, name, "staging", "dead/run", lease_seconds=60, clock=lambda: 100.0)
    holder = cl.acquire(ddb, name, "staging", "new/run", lease_seconds=60, clock=lambda: 161.0)
    assert holder.owner == "new/run"
    assert cl.current(ddb, name, "staging").owner == "new/run"


def test_environments_are_locked_independently(table):
    ddb, name = table
    cl.acquire(ddb, name, "staging", "a/1")
    assert cl.acquire(ddb, name, "prod", "b/1").owner == "b/1"


def test_only_the_owner_releases(table):
    ddb, name = table
    cl.acquire(ddb, name, "staging", "a/1")
    assert cl.release(ddb, name, "staging", "b/1") is False
    assert cl.current(ddb, name, "staging").owner == "a/1"
    assert cl.release(ddb, name, "staging", "a/1") is True
    assert cl.current(ddb, name, "staging") is None
    assert cl.release(ddb, name, "staging", "a/1") is False


def test_renew_extends_the_lease_and_fails_for_a_lost_lock(table):
    ddb, name = table
    cl.acquire(ddb, name, "staging", "a/1", lease_seconds=60, clock=lambda: 100.0)
    assert cl.renew(ddb, name, "staging", "a/1", lease_seconds=60, clock=lambda: 150.0).expires_at == 210.0
    cl.acquire(ddb, name, "staging", "b/1", lease_seconds=60, clock=lambda: 300.0)  # a/1 expired
    with pytest.raises(cl.ChangeLockLost, match="b/1"):
        cl.renew(ddb, name, "staging", "a/1", clock=lambda: 301.0)


def test_racing_owners_exactly_one_wins(table):
    ddb, name = table
    winners, refused = [], []

    def contend(i: int) -> None:
        try:
            winners.append(cl.acquire(ddb, name, "staging", f"dag/run{i}").owner)
        except cl.ChangeLockHeld:
            refused.append(i)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1
    assert len(refused) == 7
    assert cl.current(ddb, name, "staging").owner == winners[0]


def test_a_missing_lock_table_is_named_with_what_to_do(clients):
    """issue 11 point 12: not a bare ResourceNotFoundException."""
    from types import SimpleNamespace

    from bisman_ops.change import lock
    from bisman_ops.change.errors import CheckFailed

    ctx = {"ti": SimpleNamespace(dag_id="bisman_rollback_application", run_id="manual__missing"),
           "params": {"environment": "prod", "project_name": f"nolock{uuid.uuid4().hex[:6]}"}}
    with pytest.raises(CheckFailed) as err:
        lock.acquire_for(ctx, ddb_client=clients["dynamodb"])
    table = lock.LockRef.from_context(ctx).table
    assert err.value.checked == f"change lock table {table}"
    assert "does not exist" in str(err.value.seen) and f"Create {table}" in err.value.next_step
