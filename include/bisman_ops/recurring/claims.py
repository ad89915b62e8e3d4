"""Claim, send, record: a notification recorded in ``events`` exactly when it was delivered, with
no database transaction open while it is sent.

For a batch: one short transaction claims the messages by ``dedup_key`` in ``bisman_ops_claims``
(who sends what, until when) and commits (what comes back is ours); each claimed message is sent
with no transaction open (a slow mail server holds no locks and no PgBouncer server connection);
one short transaction then writes the events of the delivered ones and gives back the failed ones.
A concurrent run skips a key that is claimed or recorded; a failed send stays unrecorded and the
next run retries it, and one tenant's failure does not stop the others.

If the sender dies between claim and record, its claims expire after ``CLAIM_LEASE_S`` (longer
than any task's ``execution_timeout``) and the next run sends those messages again: at least once,
never silently lost. Small batches keep that window small. A claim is never marked "recorded": it
simply expires, and by then its event (the record) exists and every claimer skips the key.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Generic, TypeVar

import psycopg

from bisman_ops.recurring import db

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_FAILURES_KEPT = 50
CLAIM_LEASE_S = 30 * 60  # > the hourly tasks' 15-minute execution_timeout (dag_parts)


@dataclass(frozen=True)
class Claim(Generic[T]):
    dedup_key: str
    tenant_id: int | None
    payload: dict | str  # a dict, or its JSON text when the query already encoded it
    item: T


@dataclass
class ClaimOutcome:
    sent: list[str] = field(default_factory=list)
    already_recorded: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)  # "dedup_key: error", the first few

    def merge(self, other: ClaimOutcome) -> None:
        self.sent.extend(other.sent)
        self.already_recorded += other.already_recorded
        self.failed += other.failed
        room = MAX_FAILURES_KEPT - len(self.failures)
        self.failures.extend(other.failures[:max(room, 0)])


def new_claimer() -> str:
    """A token naming one sender: records and releases touch only its own claims."""
    return uuid.uuid4().hex


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def prune(conn: psycopg.Connection) -> None:
    with conn.transaction(), conn.cursor() as cur:
        db.set_statement_timeout(cur)
        cur.execute(db.sql("prune_claims"))


def claim_and_send(
    conn: psycopg.Connection,
    event_type: str,
    claims: Iterable[Claim[T]],
    send: Callable[[Claim[T]], None],
    *,
    batch_size: int = 200,
) -> ClaimOutcome:
    """Record ``claims`` as ``event_type`` events exactly when ``send`` succeeded for them.

    ``claims`` must come in ascending ``dedup_key`` order (deadlock freedom between concurrent
    runs). ``send`` raising any ``Exception`` counts as a failed delivery for that claim only.
    """
    outcome = ClaimOutcome()
    claimer = new_claimer()
    prune(conn)
    for batch in batched(claims, batch_size):
        outcome.merge(_claim_batch(conn, event_type, batch, send, claimer))
    return outcome


def _claim_batch(conn: psycopg.Connection, event_type: str, batch: list[Claim[T]], send,
                 claimer: str) -> ClaimOutcome:
    outcome = ClaimOutcome()
    owned = claim(conn, db.sql("claim_events"), {"type": event_type, "claims": _as_json(batch)}, claimer)
    outcome.already_recorded = len(batch) - len(owned)
    delivered: list[Claim[T]] = []
    failed: list[str] = []
    for c in batch:
        if c.dedup_key not in owned:
            continue
        try:
            send(c)  # no transaction open here
        except Exception as exc:  # one tenant's failure must not stop the others
            failed.append(c.dedup_key)
            if len(outcome.failures) < MAX_FAILURES_KEPT:
                outcome.failures.append(f"{c.dedup_key}: {exc}")
            log.warning("not sent, left unrecorded for the next run: %s: %s", c.dedup_key, exc)
        else:
            delivered.append(c)
    settle(conn, event_type, claimer, delivered, failed)
    outcome.sent = [c.dedup_key for c in delivered]
    outcome.failed = len(failed)
    return outcome


def claim(conn: psycopg.Connection, statement: str, params: dict, claimer: str) -> dict[str, dict]:
    """Run a claiming ``statement`` (returning ``dedup_key`` and whatever the caller needs) and
    commit; the rows now ours, by dedup_key."""
    with conn.transaction(), conn.cursor() as cur:
        db.set_statement_timeout(cur)
        cur.execute(statement, {**params, "claimed_by": claimer, "lease_s": CLAIM_LEASE_S})
        return {row["dedup_key"]: row for row in cur.fetchall()}


def settle(conn: psycopg.Connection, event_type: str, claimer: str, delivered: list[Claim],
           failed: list[str]) -> None:
    """One short transaction: the delivered claims' events written, the failed claims given back."""
    if not delivered and not failed:
        return
    with conn.transaction(), conn.cursor() as cur:
        db.set_statement_timeout(cur)
        if delivered:
            cur.execute(db.sql("record_claims"), {"type": event_type, "events": _as_json(delivered)})
        if failed:
            cur.execute(db.sql("release_events"), {"dedup_keys": failed, "claimed_by": claimer})


def _as_json(batch: list[Claim]) -> str:
    """The batch as one JSON array text; pre-encoded payloads are embedded as they are."""
    parts = []
    for c in batch:
        payload = c.payload if isinstance(c.payload, str) else json.dumps(c.payload, default=str)
        parts.append(f'{{"tenant_id": {json.dumps(c.tenant_id)}, "dedup_key": {json.dumps(c.dedup_key)}, '
                     f'"payload": {payload}}}')
    return "[" + ",".join(parts) + "]"


def claim_once(conn: psycopg.Connection, event_type: str, dedup_key: str, payload: dict,
               action: Callable[[], None], *, tenant_id: int | None = None) -> bool:
    """Run ``action`` and record the event, unless it is recorded (or being done) already. True if
    it ran now. ``action`` runs with no transaction open; raising, it gives the claim back and
    propagates: nothing recorded, the caller retries."""
    claimer = new_claimer()
    item = Claim(dedup_key, tenant_id, payload, None)
    owned = claim(conn, db.sql("claim_events"), {"type": event_type, "claims": _as_json([item])}, claimer)
    if dedup_key not in owned:
        return False
    try:
        action()
    except BaseException:
        settle(conn, event_type, claimer, [], [dedup_key])
        raise
    settle(conn, event_type, claimer, [item], [])
    return True
