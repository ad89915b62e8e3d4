"""The change lock: one change (rollout or rollback) per environment at a time.

A lease held as one item in the DynamoDB table that also holds Terraform's state locks
(``ResourceNames.lock_table``, hash key ``LockID``), under its own key
``bisman-ops/change-lock/<environment>`` so it never collides with Terraform's ``<bucket>/<key>``
items. Every write is conditional, so two runs racing for it cannot both win. The lease expires on
its own: a run that died without its teardown blocks the environment only until then, and a live
run renews it at every step (``step`` calls ``fence``), which is also the fencing check before each
mutation: a run whose lease was taken over stops before it changes anything.

The owner is ``"<dag_id>/<run_id>"`` (``owner_for``); the same owner acquiring again keeps the lock
(task retries are idempotent). ``acquire_change_lock`` / ``release_change_lock`` are the setup and
teardown tasks every change DAG declares.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bisman_ops.change.errors import CheckFailed
from bisman_ops.change.step import context, step
from bisman_ops.naming import ResourceNames

log = logging.getLogger(__name__)

KEY_PREFIX = "bisman-ops/change-lock/"
DEFAULT_LEASE_SECONDS = 3 * 3600
LEASE_ENV = "BISMAN_CHANGE_LOCK_LEASE_S"

Clock = Callable[[], float]


def lock_id(environment: str) -> str:
    return f"{KEY_PREFIX}{environment}"


def owner_for(dag_id: str, run_id: str) -> str:
    return f"{dag_id}/{run_id}"


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class LockHolder:
    environment: str
    owner: str
    acquired_at: float  # epoch seconds
    expires_at: float  # epoch seconds
    note: str = ""

    def expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) >= self.expires_at

    def describe(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        left = self.expires_at - now
        lease = (
            f"its lease expires at {_iso(self.expires_at)} (in {left:.0f} s)"
            if left > 0
            else f"its lease expired at {_iso(self.expires_at)}"
        )
        return f"held by {self.owner} since {_iso(self.acquired_at)}; {lease}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "owner": self.owner,
            "note": self.note,
            "acquired_at": _iso(self.acquired_at),
            "expires_at": _iso(self.expires_at),
        }


class ChangeLockError(RuntimeError):
    pass


class ChangeLockHeld(CheckFailed, ChangeLockError):
    """Another run holds the environment's change lock; nothing was changed."""

    def __init__(self, holder: LockHolder, wanted_by: str, now: float | None = None):
        self.holder = holder
        super().__init__(
            f"change lock for {holder.environment}",
            holder.describe(now),
            f"free, or held by {wanted_by}",
            f"{wanted_by} changed nothing. Wait for that run to finish (or, if it died, for its lease "
            "to expire), then trigger again",
            {"holder": holder.as_dict()},
        )


class ChangeLockLost(CheckFailed, ChangeLockError):
    """The caller no longer holds the lock it is trying to renew (expired and taken over, or released)."""

    def __init__(self, owner: str, environment: str, seen: str):
        super().__init__(
            f"change lock for {environment} before the next change",
            f"now {seen}",
            f"held by {owner}",
            "stop: check what the other run changed before clearing this task",
        )


def _holder(item: dict) -> LockHolder:
    return LockHolder(
        environment=item["Environment"]["S"],
        owner=item["Owner"]["S"],
        acquired_at=float(item["AcquiredAt"]["N"]),
        expires_at=float(item["ExpiresAt"]["N"]),
        note=item.get("Note", {}).get("S", ""),
    )


def _conditional_failed(exc: Exception) -> bool:
    from bisman_ops.clients.aws import error_code

    return error_code(exc) == "ConditionalCheckFailedException"


def current(ddb_client: Any, table: str, environment: str) -> LockHolder | None:
    """Who holds the lock now (possibly with an expired lease: check ``holder.expired()``), or None."""
    item = ddb_client.get_item(
        TableName=table, Key={"LockID": {"S": lock_id(environment)}}, ConsistentRead=True
    ).get("Item")
    return _holder(item) if item else None


def acquire(
    ddb_client: Any,
    table: str,
    environment: str,
    owner: str,
    *,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    note: str = "",
    clock: Clock = time.time,
) -> LockHolder:
    """Take the lock for ``environment``: free, already ours (lease renewed), or expired (taken over).

    Raises ChangeLockHeld, naming the holder and its lease's expiry, when another owner holds a
    live lease.
    """
    if lease_seconds <= 0:
        raise ValueError(f"lease_seconds must be positive, got {lease_seconds}")
    for _ in range(3):  # the holder may release between our write and our read: try again
        now = clock()
        mine = current(ddb_client, table, environment)
        acquired_at = mine.acquired_at if mine and mine.owner == owner and not mine.expired(now) else now
        holder = LockHolder(environment, owner, acquired_at, now + lease_seconds, note)
        try:
            ddb_client.put_item(
                TableName=table,
                Item={
                    "LockID": {"S": lock_id(environment)},
                    "Environment": {"S": environment},
                    "Owner": {"S": owner},
                    "AcquiredAt": {"N": f"{holder.acquired_at:.3f}"},
                    "ExpiresAt": {"N": f"{holder.expires_at:.3f}"},
                    "Note": {"S": note},
                },
                ConditionExpression="attribute_not_exists(LockID) OR #o = :owner OR ExpiresAt < :now",
                ExpressionAttributeNames={"#o": "Owner"},
                ExpressionAttributeValues={":owner": {"S": owner}, ":now": {"N": f"{now:.3f}"}},
            )
            return holder
        except Exception as exc:
            if not _conditional_failed(exc):
                raise
        other = current(ddb_client, table, environment)
        if other is not None and other.owner != owner and not other.expired(clock()):
            raise ChangeLockHeld(other, wanted_by=owner, now=clock())
    raise ChangeLockError(
        f"could not acquire the change lock for {environment} after 3 attempts "
        "(it changed hands each time); trigger again"
    )


def renew(
    ddb_client: Any,
    table: str,
    environment: str,
    owner: str,
    *,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    clock: Clock = time.time,
) -> LockHolder:
    """Extend our lease. Raises ChangeLockLost if we no longer hold the lock."""
    now = clock()
    try:
        item = ddb_client.update_item(
            TableName=table,
            Key={"LockID": {"S": lock_id(environment)}},
            UpdateExpression="SET ExpiresAt = :exp",
            ConditionExpression="#o = :owner",
            ExpressionAttributeNames={"#o": "Owner"},
            ExpressionAttributeValues={":owner": {"S": owner}, ":exp": {"N": f"{now + lease_seconds:.3f}"}},
            ReturnValues="ALL_NEW",
        )["Attributes"]
    except Exception as exc:
        if not _conditional_failed(exc):
            raise
        other = current(ddb_client, table, environment)
        seen = other.describe(now) if other else "free"
        raise ChangeLockLost(owner, environment, seen) from None
    return _holder(item)


def release(ddb_client: Any, table: str, environment: str, owner: str) -> bool:
    """Release the lock if ``owner`` holds it. False (and nothing deleted) when someone else does or
    nobody does."""
    try:
        ddb_client.delete_item(
            TableName=table,
            Key={"LockID": {"S": lock_id(environment)}},
            ConditionExpression="#o = :owner",
            ExpressionAttributeNames={"#o": "Owner"},
            ExpressionAttributeValues={":owner": {"S": owner}},
        )
    except Exception as exc:
        if _conditional_failed(exc):
            return False
        raise
    return True


# -- the lock of a run, from its context ---------------------------------------------------------------


def lease_seconds(environ: dict | None = None) -> float:
    env = os.environ if environ is None else environ
    return float(env.get(LEASE_ENV) or DEFAULT_LEASE_SECONDS)


def names_for(params: dict[str, Any], environ: dict | None = None) -> ResourceNames:
    """The environment's resource names, the project from ``config.project_name``: the configured
    ``BISMAN_PROJECT_NAME``, else the form's project_name (the rollout's), else bisman-erp."""
    from bisman_ops import config

    return ResourceNames(config.project_name(params.get("project_name"), environ), str(params["environment"]))


@dataclass(frozen=True)
class LockRef:
    """Which lock a run holds: table, environment, owner and lease length."""

    table: str
    environment: str
    owner: str
    lease_seconds: float

    @classmethod
    def from_context(cls, context: Any) -> LockRef:
        ti, params = context["ti"], context["params"]
        return cls(names_for(params).lock_table, str(params["environment"]), owner_for(ti.dag_id, ti.run_id),
                   lease_seconds())


def _dynamodb() -> Any:
    from bisman_ops.clients import aws

    return aws.client("dynamodb")


def fence(context: Any, ddb_client: Any = None) -> LockHolder:
    """Renew this run's lease; raises ChangeLockLost (a CheckFailed) when the lock is no longer ours,
    so nothing is changed by a run that lost it."""
    ref = LockRef.from_context(context)
    return renew(ddb_client or _dynamodb(), ref.table, ref.environment, ref.owner,
                 lease_seconds=ref.lease_seconds)


class LeaseKeeper:
    """Renews ``ref``'s lease every ``every`` seconds in a thread while a long step runs, so a live
    run's lease never runs out under it (a Terraform apply, a wait inside a step). A renewal that
    finds the lock lost is kept: ``check()`` raises it, and a step calls it when the function
    returns (its result does not stand) and a loop may call it between mutations. A renewal that
    fails for another reason (DynamoDB unreachable) is tried again at the next interval."""

    def __init__(self, ref: LockRef, ddb_client: Any, every: float | None = None):
        import threading

        self.ref, self.ddb = ref, ddb_client
        self.every = every if every is not None else max(1.0, min(ref.lease_seconds / 6, 600.0))
        self.lost: ChangeLockLost | None = None
        self.renewals = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="change-lock-lease", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                renew(self.ddb, self.ref.table, self.ref.environment, self.ref.owner,
                      lease_seconds=self.ref.lease_seconds)
                self.renewals += 1
            except ChangeLockLost as exc:
                log.error("the change lock was lost while this step ran: %s", exc)
                self.lost = exc
                return
            except Exception as exc:  # a later renewal may succeed; the lease still has time
                log.warning("change lock lease not renewed (%s); trying again in %.0f s",
                            type(exc).__name__, self.every)

    def check(self) -> None:
        if self.lost is not None:
            raise self.lost

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def keep_lease(context: Any, ddb_client: Any = None, every: float | None = None) -> LeaseKeeper:
    """A ``LeaseKeeper`` for this run's lock (use as ``with``)."""
    return LeaseKeeper(LockRef.from_context(context), ddb_client or _dynamodb(), every)


def acquire_for(context: Any, note: str = "", ddb_client: Any = None) -> LockHolder:
    ref = LockRef.from_context(context)
    try:
        return acquire(ddb_client or _dynamodb(), ref.table, ref.environment, ref.owner,
                       lease_seconds=ref.lease_seconds, note=note[:200])
    except Exception as exc:
        from bisman_ops.clients.aws import error_code

        if error_code(exc) != "ResourceNotFoundException":
            raise
        raise CheckFailed(
            f"change lock table {ref.table}", "does not exist (DynamoDB ResourceNotFoundException)",
            f"the {ref.environment} environment's lock table (hash key LockID)",
            f"nothing was changed. Create {ref.table} (the rollout's preflight does with "
            "create_state_backend, or Terraform's backend bootstrap), then trigger again") from None


def release_for(context: Any, ddb_client: Any = None) -> bool:
    ref = LockRef.from_context(context)
    released = release(ddb_client or _dynamodb(), ref.table, ref.environment, ref.owner)
    if not released:
        log.warning("the change lock for %s was not ours to release (expired and taken over, or "
                    "already released)", ref.environment)
    return released


# -- the setup and teardown tasks ---------------------------------------------------------------------


@step(lease=False)
def acquire_change_lock(note: str = "") -> dict:
    """Setup: take the environment's change lock (``note``, templated, says what the run does).
    Held by another run: fails without a retry naming the holder; nothing was changed."""
    return acquire_for(context(), note).as_dict()


@step(lease=False)
def release_change_lock() -> dict:
    """Teardown: give the lock back if this run holds it."""
    return {"released": release_for(context())}
