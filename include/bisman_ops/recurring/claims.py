"""Claim, send, commit: a notification recorded in ``events`` exactly when it was delivered.

For a batch: insert the events with their ``dedup_key`` (``ON CONFLICT DO NOTHING RETURNING``:
what comes back is ours), send each claimed message, delete the claims whose send failed, commit.
A concurrent run inserting the same key waits on our uncommitted row, then skips it (we
delivered) or claims it (we gave it back). A failed send therefore stays unrecorded and the
next run retries it, and one tenant's failure does not stop the others.

The one gap is inherent: if the database connection drops after a send and before the commit,
that batch is rolled back and its messages go out again on the next run (at least once, never
silently lost). Small batches keep that window small.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Generic, TypeVar

import psycopg

from bisman_ops.recurring import db

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_FAILURES_KEPT = 50


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


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


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
    for batch in batched(claims, batch_size):
        outcome.merge(_claim_batch(conn, event_type, batch, send))
    return outcome


def _claim_batch(conn: psycopg.Connection, event_type: str, batch: list[Claim[T]], send) -> ClaimOutcome:
    outcome = ClaimOutcome()
    with conn.transaction(), conn.cursor() as cur:
        db.set_statement_timeout(cur)
        cur.execute(db.sql("claim_events"), {"type": event_type, "claims": _as_json(batch)})
        owned = {row["dedup_key"] for row in cur.fetchall()}
        outcome.already_recorded = len(batch) - len(owned)
        failed_keys = []
        for claim in batch:
            if claim.dedup_key not in owned:
                continue
            try:
                send(claim)
            except Exception as exc:  # one tenant's failure must not stop the others
                failed_keys.append(claim.dedup_key)
                if len(outcome.failures) < MAX_FAILURES_KEPT:
                    outcome.failures.append(f"{claim.dedup_key}: {exc}")
                log.warning("not sent, left unrecorded for the next run: %s: %s", claim.dedup_key, exc)
            else:
                outcome.sent.append(claim.dedup_key)
        if failed_keys:
            cur.execute(db.sql("release_events"), {"type": event_type, "dedup_keys": failed_keys})
        outcome.failed = len(failed_keys)
    return outcome


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
    """Run ``action`` and record the event, unless it is recorded already. True if it ran now.

    ``action`` raising rolls the claim back and propagates: nothing recorded, the caller retries.
    """
    with conn.transaction(), conn.cursor() as cur:
        db.set_statement_timeout(cur)
        cur.execute(db.sql("claim_events"), {
            "type": event_type, "claims": _as_json([Claim(dedup_key, tenant_id, payload, None)])})
        if cur.fetchone() is None:
            return False
        action()
    return True
