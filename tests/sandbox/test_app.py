"""The sandbox application under gunicorn, against the real PostgreSQL/PgBouncer, Redis Sentinel and moto."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import signal
import time
import uuid

import pytest
import requests

from bisman_ops import app_tokens, config
from bisman_sandbox import app_server, aws, context, pgbouncer, postgres, redis
from bisman_sandbox.context import SandboxContext
from bisman_sandbox.process import wait_until

pytestmark = pytest.mark.timeout(240)
HTTP_TIMEOUT = 10


@pytest.fixture(scope="module")
def ctx() -> SandboxContext:
    c = SandboxContext.from_env()
    for service in (postgres, pgbouncer, redis, aws, app_server):
        service.up(c)
    return c


@pytest.fixture(scope="module")
def base(ctx) -> str:
    return app_server.base_url(ctx)


@pytest.fixture(scope="module")
def admin() -> dict[str, str]:
    return app_tokens.bearer_header(app_tokens.mint(context.JWT_SECRET, role="admin"))


def primary_query(ctx: SandboxContext, sql: str, params=()):
    with postgres.connect(postgres.dsn(ctx, "primary")) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else None


@pytest.fixture
def tenant(ctx):
    """A throw-away free-plan tenant (the seed tenants belong to other tests), on the replica too."""
    tenant_id = 900_000 + uuid.uuid4().int % 99_999
    customer = f"cus_test_{uuid.uuid4().hex[:12]}"
    primary_query(
        ctx,
        "INSERT INTO tenants (id, slug, name, plan, status, stripe_customer_id)"
        " VALUES (%s, %s, %s, 'free', 'active', %s)",
        (tenant_id, f"test-{tenant_id}", f"Test tenant {tenant_id}", customer),
    )
    postgres.wait_for_replica_catch_up(ctx)
    yield {"id": tenant_id, "customer": customer}
    primary_query(ctx, "DELETE FROM events WHERE tenant_id = %s", (tenant_id,))
    primary_query(ctx, "DELETE FROM tenants WHERE id = %s", (tenant_id,))


def get(url: str, headers: dict | None = None) -> requests.Response:
    return requests.get(url, headers=headers, timeout=HTTP_TIMEOUT)


def tenant_header(tenant_id: int) -> dict[str, str]:
    return app_tokens.bearer_header(app_tokens.mint(context.JWT_SECRET, tenant_id=tenant_id))


def routing_lines(ctx: SandboxContext, request_id: str) -> list[str]:
    text = app_server.routing_log_file(ctx).read_text()
    return [line for line in text.splitlines() if f"request_id={request_id}" in line]


def cloudwatch_messages(ctx: SandboxContext, pattern: str) -> list[str]:
    logs = aws.client(ctx, "logs")
    found = logs.filter_log_events(logGroupName=app_server.log_group(), filterPattern=pattern)
    return [e["message"] for e in found["events"]]


def metric_value(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        series, value = line.rsplit(" ", 1)
        if series.split("{", 1)[0] != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', series))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(value)
    return total


# --- health -----------------------------------------------------------------------------------


def test_health_endpoints_answer_ok_when_database_and_redis_are_up(ctx, base):
    health = requests.get(f"{base}/health", timeout=HTTP_TIMEOUT)
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert requests.get(f"{base}/api/health/db", timeout=HTTP_TIMEOUT).status_code == 200
    redis_health = requests.get(f"{base}/api/health/redis", timeout=HTTP_TIMEOUT)
    assert redis_health.status_code == 200
    host, port = redis.master_address(ctx)
    assert redis_health.json()["master"] == f"{host}:{port}"


def test_health_is_503_naming_the_database_while_pgbouncer_is_down(ctx, base):
    # Answering at all within HTTP_TIMEOUT is the bound; bench/sandbox.py measures how fast.
    pgbouncer.down(ctx)
    try:
        health = requests.get(f"{base}/health", timeout=HTTP_TIMEOUT)
        db_health = requests.get(f"{base}/api/health/db", timeout=HTTP_TIMEOUT)
    finally:
        pgbouncer.up(ctx)
    assert health.status_code == 503
    assert health.json()["failed"] == ["database"]
    assert db_health.status_code == 503
    assert context.DB_PASSWORD not in health.text + db_health.text
    wait_until(lambda: requests.get(f"{base}/health", timeout=HTTP_TIMEOUT).status_code == 200,
               timeout=20, what="app healthy again after PgBouncer restart")


def test_redis_health_follows_the_new_master_after_a_sentinel_failover(ctx, base):
    before = requests.get(f"{base}/api/health/redis", timeout=HTTP_TIMEOUT).json()["master"]
    _, new_master = redis.failover(ctx)
    # Every worker holds its own pool: probe enough times to reach each of them.
    answers = [requests.get(f"{base}/api/health/redis", timeout=HTTP_TIMEOUT) for _ in range(9)]
    assert {a.status_code for a in answers} == {200}
    assert {a.json()["master"] for a in answers} == {f"{new_master[0]}:{new_master[1]}"}
    assert before != f"{new_master[0]}:{new_master[1]}"
    assert requests.get(f"{base}/health", timeout=HTTP_TIMEOUT).status_code == 200


# --- read routing -----------------------------------------------------------------------------


def test_admin_usage_read_is_served_by_the_replica_and_logged_replica(ctx, base, admin, tenant):
    request_id = f"test-{uuid.uuid4().hex}"
    response = requests.get(f"{base}/api/admin/tenants/{tenant['id']}/usage",
                            headers={**admin, "X-Request-Id": request_id}, timeout=HTTP_TIMEOUT)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["served_by"], body["route"], body["slug"]) == ("replica", "replica", f"test-{tenant['id']}")
    lines = routing_lines(ctx, request_id)
    assert len(lines) == 1 and "db_route=replica" in lines[0] and f"tenant_id={tenant['id']}" in lines[0]
    messages = cloudwatch_messages(ctx, f'"request_id={request_id}"')
    assert len(messages) == 1 and messages[0].startswith("db_route=replica ")


def test_no_routing_line_is_lost_when_the_log_group_was_deleted_and_created_again(ctx, base, admin, tenant):
    # Every worker has logged once (its stream is known), then the group goes and comes back empty.
    for _ in range(3 * app_server.WORKERS):
        requests.get(f"{base}/api/admin/tenants/{tenant['id']}/usage", headers=admin, timeout=HTTP_TIMEOUT)
    aws.client(ctx, "logs").delete_log_group(logGroupName=app_server.log_group())
    aws.seed(ctx)
    request_ids = [f"test-{uuid.uuid4().hex}" for _ in range(3 * app_server.WORKERS)]
    for rid in request_ids:
        answer = requests.get(f"{base}/api/admin/tenants/{tenant['id']}/usage",
                              headers={**admin, "X-Request-Id": rid}, timeout=HTTP_TIMEOUT)
        assert answer.status_code == 200
    in_cloudwatch = "\n".join(cloudwatch_messages(ctx, '"db_route=replica"'))
    assert [rid for rid in request_ids if f"request_id={rid}" not in in_cloudwatch] == []


def test_reads_fall_back_to_the_primary_while_the_replica_is_down(ctx, base, admin, tenant):
    request_ids = [f"test-{uuid.uuid4().hex}" for _ in range(3)]
    postgres.stop_replica(ctx)
    try:
        answers = [
            requests.get(f"{base}/api/admin/tenants/{tenant['id']}/usage",
                         headers={**admin, "X-Request-Id": rid}, timeout=HTTP_TIMEOUT)
            for rid in request_ids
        ]
        health = requests.get(f"{base}/health", timeout=HTTP_TIMEOUT)
    finally:
        postgres.start_replica(ctx)
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert {(a.json()["served_by"], a.json()["route"]) for a in answers} == {("primary", "fallback")}
    assert health.status_code == 200
    for rid in request_ids:
        lines = routing_lines(ctx, rid)
        assert len(lines) == 1 and "db_route=fallback" in lines[0] and 'reason="' in lines[0]
    in_cloudwatch = cloudwatch_messages(ctx, '"db_route=fallback"')
    for rid in request_ids:
        assert any(f"request_id={rid}" in m for m in in_cloudwatch), rid
    assert all(context.DB_PASSWORD not in m for m in in_cloudwatch)


def test_reads_return_to_the_replica_once_it_is_back(ctx, base, admin, tenant):
    def served_by_replica() -> bool:
        answer = requests.get(f"{base}/api/admin/tenants/{tenant['id']}/usage", headers=admin,
                              timeout=HTTP_TIMEOUT)
        return answer.json()["served_by"] == "replica"

    wait_until(served_by_replica, timeout=20, what="admin read served by the replica again")


def test_admin_write_lands_on_the_primary_and_is_logged_primary_write(ctx, base, admin, tenant):
    request_id = f"test-{uuid.uuid4().hex}"
    before = primary_query(ctx, "SELECT updated_at FROM tenants WHERE id = %s", (tenant["id"],))[0][0]
    response = requests.post(f"{base}/api/admin/tenants/{tenant['id']}/touch",
                             headers={**admin, "X-Request-Id": request_id}, timeout=HTTP_TIMEOUT)
    assert response.status_code == 200, response.text
    assert (response.json()["served_by"], response.json()["route"]) == ("primary", "primary-write")
    after = primary_query(ctx, "SELECT updated_at FROM tenants WHERE id = %s", (tenant["id"],))[0][0]
    assert after > before
    assert "db_route=primary-write" in routing_lines(ctx, request_id)[0]


def test_admin_endpoints_refuse_missing_invalid_and_tenant_tokens(base, tenant):
    url = f"{base}/api/admin/tenants/{tenant['id']}/usage"
    assert get(url).status_code == 401
    forged = app_tokens.mint("another-secret-of-sufficient-length-0123456789", role="admin")
    assert get(url, app_tokens.bearer_header(forged)).status_code == 401
    expired = app_tokens.mint(context.JWT_SECRET, role="admin", ttl=60, now=time.time() - 3600)
    assert get(url, app_tokens.bearer_header(expired)).status_code == 401
    assert get(url, {"Authorization": "Basic YWRtaW46YWRtaW4="}).status_code == 401
    assert get(url, tenant_header(tenant["id"])).status_code == 403


# --- usage meter and quotas -----------------------------------------------------------------


def todays_api_calls(ctx: SandboxContext, tenant_id: int) -> int | None:
    rows = primary_query(
        ctx,
        "SELECT quantity FROM client_daily_usage WHERE tenant_id = %s AND metric = 'api_calls'"
        " AND usage_date = (now() AT TIME ZONE 'UTC')::date",
        (tenant_id,),
    )
    return rows[0][0] if rows else None


def test_tenant_requests_are_counted_into_client_daily_usage(ctx, base, tenant):
    for _ in range(3):
        response = requests.get(f"{base}/api/usage/quota", headers=tenant_header(tenant["id"]),
                                timeout=HTTP_TIMEOUT)
        assert response.status_code == 200, response.text
    assert todays_api_calls(ctx, tenant["id"]) == 3
    api_calls = response.json()["quotas"]["api_calls"]
    assert api_calls["day"]["usage"] == 3
    assert api_calls["day"]["quota"] == 1000  # the free plan's limit, no override
    assert api_calls["month"]["usage"] == 3


def test_tenant_gets_429_once_at_its_day_quota_and_rejected_calls_are_not_counted(ctx, base, tenant):
    primary_query(ctx, "INSERT INTO tenant_quotas VALUES (%s, 'api_calls', 'day', 3)", (tenant["id"],))
    statuses = [
        requests.get(f"{base}/api/usage/quota", headers=tenant_header(tenant["id"]), timeout=HTTP_TIMEOUT)
        for _ in range(5)
    ]
    assert [s.status_code for s in statuses] == [200, 200, 200, 429, 429]
    refused = statuses[3].json()
    assert (refused["metric"], refused["period"], refused["quota"], refused["usage"]) == (
        "api_calls", "day", 3, 3
    )
    assert int(statuses[3].headers["Retry-After"]) > 0
    day = statuses[2].json()["quotas"]["api_calls"]["day"]
    assert (day["usage"], day["quota"], day["remaining"], day["overridden"]) == (3, 3, 0, True)
    assert todays_api_calls(ctx, tenant["id"]) == 3


def test_month_quota_counts_the_whole_month_and_a_null_override_lifts_the_day_limit(ctx, base, tenant):
    # Free plan: 1000 a day. Override: unlimited a day, 1005 a month, with 1000 already used today.
    primary_query(ctx, "INSERT INTO tenant_quotas VALUES (%s, 'api_calls', 'day', NULL),"
                       " (%s, 'api_calls', 'month', 1005)", (tenant["id"], tenant["id"]))
    primary_query(ctx, "INSERT INTO client_daily_usage (tenant_id, usage_date, metric, quantity)"
                       " VALUES (%s, (now() AT TIME ZONE 'UTC')::date, 'api_calls', 1000)", (tenant["id"],))
    statuses = [
        requests.get(f"{base}/api/usage/quota", headers=tenant_header(tenant["id"]), timeout=HTTP_TIMEOUT)
        for _ in range(6)
    ]
    assert [s.status_code for s in statuses] == [200] * 5 + [429]
    assert (statuses[5].json()["period"], statuses[5].json()["quota"]) == ("month", 1005)
    assert statuses[0].json()["quotas"]["api_calls"]["day"]["quota"] is None


def test_token_of_an_unknown_tenant_is_refused(base):
    response = get(f"{base}/api/usage/quota", tenant_header(999_999_999))
    assert response.status_code == 403


# --- Stripe webhook ---------------------------------------------------------------------------


def stripe_event(customer: str) -> bytes:
    event = {
        "id": f"evt_test_{uuid.uuid4().hex[:16]}",
        "object": "event",
        "type": "invoice.payment_failed",
        "created": int(time.time()),
        "data": {"object": {"id": f"in_{uuid.uuid4().hex[:12]}", "object": "invoice", "customer": customer}},
    }
    return json.dumps(event).encode()


def signed(body: bytes, secret: str = context.STRIPE_WEBHOOK_SECRET, at: int | None = None) -> dict:
    timestamp = int(time.time()) if at is None else at
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return {"Stripe-Signature": f"t={timestamp},v1={mac}", "Content-Type": "application/json"}


def events_with_key(ctx: SandboxContext, dedup_key: str):
    return primary_query(
        ctx, "SELECT tenant_id, type, payload FROM events WHERE dedup_key = %s", (dedup_key,)
    )


def test_signed_stripe_event_is_recorded_once_even_when_redelivered(ctx, base, tenant):
    body = stripe_event(tenant["customer"])
    event_id = json.loads(body)["id"]
    url = f"{base}/api/webhooks/stripe"
    first = requests.post(url, data=body, headers=signed(body), timeout=HTTP_TIMEOUT)
    again = requests.post(url, data=body, headers=signed(body), timeout=HTTP_TIMEOUT)
    assert (first.status_code, first.json()["duplicate"]) == (200, False)
    assert (again.status_code, again.json()["duplicate"]) == (200, True)
    rows = events_with_key(ctx, f"stripe:{event_id}")
    assert len(rows) == 1
    tenant_id, event_type, payload = rows[0]
    assert (tenant_id, event_type, payload["id"]) == (tenant["id"], "stripe.invoice.payment_failed", event_id)


@pytest.mark.parametrize("forgery", ["wrong secret", "stale timestamp", "tampered body", "no signature"])
def test_stripe_webhook_rejects_unverifiable_requests(ctx, base, tenant, forgery):
    body = stripe_event(tenant["customer"])
    headers = signed(body)
    if forgery == "wrong secret":
        headers = signed(body, secret="whsec_not_the_right_one")
    elif forgery == "stale timestamp":
        headers = signed(body, at=int(time.time()) - 400)
    elif forgery == "tampered body":
        body = body.replace(b"invoice.payment_failed", b"invoice.payment_succeeded")
    else:
        headers.pop("Stripe-Signature")
    response = requests.post(f"{base}/api/webhooks/stripe", data=body, headers=headers, timeout=HTTP_TIMEOUT)
    assert response.status_code == 400
    assert context.STRIPE_WEBHOOK_SECRET not in response.text
    assert events_with_key(ctx, f"stripe:{json.loads(body)['id']}") == []


# --- process model and metrics ----------------------------------------------------------------


def test_metrics_sum_request_counters_over_all_workers(base):
    def health_count() -> float:
        text = requests.get(f"{base}/metrics", timeout=HTTP_TIMEOUT).text
        return metric_value(text, "http_requests_total", route="/health", status="200")

    before = health_count()
    for _ in range(12):  # a new connection each time: gunicorn spreads them over its workers
        assert requests.get(f"{base}/health", timeout=HTTP_TIMEOUT).status_code == 200
    text = requests.get(f"{base}/metrics", timeout=HTTP_TIMEOUT).text
    assert metric_value(text, "http_requests_total", route="/health", status="200") - before == 12
    assert metric_value(text, "http_request_duration_seconds_count", route="/health") >= 12
    assert metric_value(text, "app_database_up", pool="read-write") == 1
    assert metric_value(text, "app_redis_up") == 1
    assert "# TYPE http_request_duration_seconds histogram" in text


def test_killed_worker_is_replaced_and_health_stays_ok(ctx, base):
    workers = app_server.worker_pids(ctx)
    assert len(workers) == app_server.WORKERS
    requests_before = metric_value(requests.get(f"{base}/metrics", timeout=HTTP_TIMEOUT).text,
                                   "http_requests_total")
    victim = workers[0]
    os.kill(victim, signal.SIGKILL)
    statuses = [requests.get(f"{base}/health", timeout=HTTP_TIMEOUT).status_code for _ in range(10)]
    assert set(statuses) == {200}

    def replaced() -> bool:
        now = app_server.worker_pids(ctx)
        return len(now) == app_server.WORKERS and victim not in now

    wait_until(replaced, timeout=30, what="gunicorn replacing the killed worker")
    # The dead worker's counts are kept: counters never go backwards.
    requests_after = metric_value(requests.get(f"{base}/metrics", timeout=HTTP_TIMEOUT).text,
                                  "http_requests_total")
    assert requests_after >= requests_before + 10


def test_up_is_idempotent_and_connection_points_at_the_app(ctx):
    master = app_server.master_pid(ctx)
    app_server.up(ctx)
    assert app_server.master_pid(ctx) == master
    assert app_server.healthy(ctx)
    conn = app_server.connections(ctx)[config.APP_API_CONN_ID]
    assert (conn["conn_type"], conn["host"], conn["port"]) == ("http", "http://127.0.0.1", ctx.port("app"))

