"""Reads go to the replica (PgBouncer's read-only pool) and fall back to the primary when the
replica cannot answer; writes go to the primary. Each routed access logs one line."""

from __future__ import annotations

from dataclasses import dataclass

from bisman_sandbox.app import db
from bisman_sandbox.app.queries import sql
from bisman_sandbox.app.routing_log import RoutingLog
from bisman_sandbox.app.settings import Settings


@dataclass(frozen=True)
class Routed:
    row: dict | None
    route: str  # "replica", "fallback" or "primary-write"
    served_by: str  # "replica" or "primary", as the node itself reports (pg_is_in_recovery)


def _served_by(row: dict) -> str:
    return "replica" if row["in_recovery"] else "primary"


def read_tenant_usage(settings: Settings, log: RoutingLog, tenant_id: int, request_id: str) -> Routed:
    params = {"tenant_id": tenant_id}
    try:
        with db.connect(settings, replica=True) as conn:
            row = conn.execute(sql("tenant_usage_read"), params).fetchone()
    except db.UNAVAILABLE as exc:
        reason = f"{type(exc).__name__}: {exc}"
        # Primary errors propagate: there is nothing left to fall back to.
        with db.connect(settings) as conn:
            row = conn.execute(sql("tenant_usage_read"), params).fetchone()
        log.record("fallback", tenant_id=tenant_id, request_id=request_id, reason=reason)
        return Routed(row=row, route="fallback", served_by=_served_by(row))
    log.record("replica", tenant_id=tenant_id, request_id=request_id)
    return Routed(row=row, route="replica", served_by=_served_by(row))


def touch_tenant(settings: Settings, log: RoutingLog, tenant_id: int, request_id: str) -> Routed:
    with db.connect(settings) as conn:
        row = conn.execute(sql("tenant_touch"), {"tenant_id": tenant_id}).fetchone()
    if row is None:  # no such tenant: nothing was written, nothing to log
        return Routed(row=None, route="primary-write", served_by="primary")
    log.record("primary-write", tenant_id=tenant_id, request_id=request_id)
    return Routed(row=row, route="primary-write", served_by=_served_by(row))
