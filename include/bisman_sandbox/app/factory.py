"""The Flask application: routes, authentication, metering and metrics hooks."""

from __future__ import annotations

import contextlib
import os
import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from flask import Flask, Response, g, jsonify, request

from bisman_sandbox.app import db, read_routing, redis_client, stripe_webhook, usage_meter
from bisman_sandbox.app.auth import Unauthorized, claims_of, require_role
from bisman_sandbox.app.metrics import Metrics, gauge
from bisman_sandbox.app.queries import sql
from bisman_sandbox.app.routing_log import RoutingLog
from bisman_sandbox.app.settings import Settings, redact

# Requests that are never metered: probes, scrapes and Stripe's own calls.
_UNMETERED_PREFIXES = ("/health", "/api/health/", "/metrics", "/api/webhooks/")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
HSTS_MAX_AGE_S = 365 * 24 * 3600


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    app = Flask("bisman_erp_sandbox")
    app.json.sort_keys = False
    routing_log = RoutingLog(settings)
    metrics = Metrics(settings.metrics_dir)

    def failure(exc: BaseException) -> str:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        first_line = first_line.split(" : <", 1)[0]  # redis-py appends the client's repr
        return redact(f"{type(exc).__name__}: {first_line}"[:300], settings.secrets)

    def error(status: int, message: str, **extra) -> Response:
        response = jsonify({"error": message, "request_id": g.get("request_id"), **extra})
        response.status_code = status
        return response

    @app.before_request
    def identify_and_meter():
        g.started = time.perf_counter()
        supplied = request.headers.get("X-Request-Id", "")
        g.request_id = supplied if _REQUEST_ID.match(supplied) else uuid.uuid4().hex
        if settings.latency_file and os.path.exists(settings.latency_file):
            with contextlib.suppress(OSError, ValueError):
                time.sleep(float(Path(settings.latency_file).read_text().strip() or 0) / 1000)
        if settings.fault_file and os.path.exists(settings.fault_file) and not request.path.startswith(
                _UNMETERED_PREFIXES):
            return error(500, "fault injected (sandbox alert drill)")
        g.claims, g.auth_error = None, None
        try:
            g.claims = claims_of(request, settings.jwt_secret)
        except Unauthorized as exc:
            g.auth_error = exc
        claims = g.claims
        if claims is None or claims.tenant_id is None or request.path.startswith(_UNMETERED_PREFIXES):
            return None
        if not (settings.usage_meter_enabled or settings.quota_enforcement_enabled):
            return None
        try:
            metered = usage_meter.meter_request(settings, claims.tenant_id)
        except db.UNAVAILABLE as exc:
            return error(503, "usage meter unavailable", reason=failure(exc))
        if not metered.tenant_exists:
            return error(403, f"tenant {claims.tenant_id} does not exist")
        if metered.over_quota:
            metrics.inc("app_quota_rejections_total", {"period": metered.breach_period})
            response = error(
                429,
                "quota exceeded",
                tenant_id=claims.tenant_id,
                metric=usage_meter.METERED_METRIC,
                period=metered.breach_period,
                quota=metered.breach_quota,
                usage=metered.breach_usage,
            )
            response.headers["Retry-After"] = str(_seconds_until_period_end(metered.breach_period))
            return response
        return None

    @app.after_request
    def record_request(response: Response) -> Response:
        response.headers["X-Request-Id"] = g.get("request_id", "")
        # As the real application (helmet) does: browsers honour it only over HTTPS (the TLS listener).
        response.headers["Strict-Transport-Security"] = f"max-age={HSTS_MAX_AGE_S}; includeSubDomains"
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        elapsed = time.perf_counter() - g.get("started", time.perf_counter())
        metrics.observe_request(request.method, route, response.status_code, elapsed)
        claims = g.get("claims")
        if claims is not None and claims.tenant_id is not None:
            metrics.inc("app_tenant_requests_total", {"tenant_id": str(claims.tenant_id),
                                                      "status": str(response.status_code)})
        return response

    @app.errorhandler(Unauthorized)
    def unauthorized(exc: Unauthorized):
        return error(exc.status, str(exc))

    @app.errorhandler(db.UNAVAILABLE)
    def database_unavailable(exc: Exception):
        return error(503, "database unavailable", reason=failure(exc))

    def authenticated(role: str):
        if g.auth_error is not None:
            raise g.auth_error
        return require_role(g.claims, role)

    def check_database() -> str | None:
        try:
            db.ping(settings)
        except Exception as exc:  # any failure is a failed check
            return failure(exc)
        return None

    def check_redis() -> tuple[str | None, str | None]:
        try:
            return redis_client.ping(settings), None
        except Exception as exc:  # any failure is a failed check
            return None, failure(exc)

    @app.get("/health")
    def health():
        db_error = check_database()
        _, redis_error = check_redis()
        checks = {"database": db_error or "ok", "redis": redis_error or "ok"}
        failed = [name for name, value in checks.items() if value != "ok"]
        if failed:
            return jsonify({"status": "unavailable", "failed": failed, "checks": checks}), 503
        return jsonify({"status": "ok", "checks": checks})

    @app.get("/api/health/db")
    def health_db():
        db_error = check_database()
        if db_error:
            return jsonify({"status": "unavailable", "pool": "read-write", "error": db_error}), 503
        return jsonify({"status": "ok", "pool": "read-write"})

    @app.get("/api/health/redis")
    def health_redis():
        master, redis_error = check_redis()
        if redis_error:
            return jsonify({"status": "unavailable", "error": redis_error}), 503
        return jsonify({"status": "ok", "master": master})

    @app.get("/api/admin/tenants/<int:tenant_id>/usage")
    def admin_tenant_usage(tenant_id: int):
        authenticated("admin")
        routed = read_routing.read_tenant_usage(settings, routing_log, tenant_id, g.request_id)
        metrics.inc("app_db_route_total", {"route": routed.route})
        row = routed.row
        body = {"tenant_id": tenant_id, "served_by": routed.served_by, "route": routed.route,
                "request_id": g.request_id}
        if row["id"] is None:
            return jsonify({**body, "error": f"tenant {tenant_id} not found"}), 404
        return jsonify({**body, "slug": row["slug"], "plan": row["plan"], "status": row["status"],
                        "usage": row["usage"]})

    @app.post("/api/admin/tenants/<int:tenant_id>/touch")
    def admin_touch_tenant(tenant_id: int):
        authenticated("admin")
        routed = read_routing.touch_tenant(settings, routing_log, tenant_id, g.request_id)
        if routed.row is None:
            return error(404, f"tenant {tenant_id} not found")
        metrics.inc("app_db_route_total", {"route": routed.route})
        return jsonify({"tenant_id": tenant_id, "updated_at": routed.row["updated_at"].isoformat(),
                        "served_by": routed.served_by, "route": routed.route, "request_id": g.request_id})

    @app.get("/api/usage/quota")
    def usage_quota():
        claims = authenticated("tenant")
        quotas: dict[str, dict[str, dict]] = {}
        for row in usage_meter.quota_status(settings, claims.tenant_id):
            quotas.setdefault(row.pop("metric"), {})[row.pop("period")] = row
        return jsonify({"tenant_id": claims.tenant_id, "quotas": quotas})

    @app.post("/api/webhooks/stripe")
    def stripe_webhook_endpoint():
        try:
            event = stripe_webhook.verify(
                settings, request.get_data(), request.headers.get("Stripe-Signature")
            )
        except stripe_webhook.RejectedWebhook as exc:
            return error(400, str(exc))
        recorded = stripe_webhook.record(settings, event)
        return jsonify({"received": True, "event_id": recorded.event_id, "type": recorded.event_type,
                        "tenant_id": recorded.tenant_id, "duplicate": recorded.duplicate})

    @app.get("/metrics")
    def prometheus_metrics():
        gauges = {
            **gauge("app_database_up", {"pool": "read-write"}, check_database() is None),
            **gauge("app_database_up", {"pool": "read-only"}, _replica_up(settings)),
            **gauge("app_redis_up", {}, check_redis()[1] is None),
        }
        gauges.update(_database_gauges(settings))
        return Response(metrics.render(gauges), mimetype="text/plain; version=0.0.4")

    return app


def _database_gauges(settings: Settings) -> dict:
    """Per-tenant quota use (primary) and the replica's replay lag, measured at scrape time."""
    out: dict = {}
    try:
        with db.connect(settings) as conn:
            for r in conn.execute(sql("tenant_quota_use")).fetchall():
                out[("app_tenant_quota_used_ratio", (("period", r["period"]),
                                                     ("tenant_id", str(r["tenant_id"]))))] = float(r["ratio"])
        with db.connect(settings, replica=True) as conn:
            lag = conn.execute(sql("replica_lag")).fetchone()["lag"]
            if lag is not None:
                out[("app_database_replica_lag_seconds", ())] = float(lag)
    except Exception:  # a database down is reported by app_database_up
        pass
    return out


def _replica_up(settings: Settings) -> bool:
    try:
        db.ping(settings, replica=True)
    except Exception:  # any failure means down
        return False
    return True


def _seconds_until_period_end(period: str) -> int:
    now = datetime.now(UTC)
    if period == "day":
        end = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    else:
        end = (now.replace(day=1) + timedelta(days=32)).replace(day=1, hour=0, minute=0, second=0,
                                                                  microsecond=0)
    return max(int((end - now).total_seconds()), 1)
