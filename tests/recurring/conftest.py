"""Fixtures for the recurring jobs: the real sandbox services (PostgreSQL behind PgBouncer, the
mail and Slack sinks, moto, the Stripe emulator), Airflow connections pointing at them, and
tenants of each test's own (high ids, removed afterwards) since other suites share the database."""

from __future__ import annotations

import itertools
import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg
import pytest
import requests

from bisman_ops.recurring import db
from bisman_sandbox import aws, pgbouncer, postgres, sinks, stripe_emulator
from bisman_sandbox.context import HOST, SandboxContext

# Each test module gets its own block of tenant ids, far above the seed's.
_ID_BLOCKS = itertools.count(1)
ID_BASE = 880_000_000 + (os.getpid() % 1000) * 100_000


@pytest.fixture(scope="session")
def ctx() -> SandboxContext:
    ctx = SandboxContext.from_env()
    for service in (postgres, pgbouncer, sinks, aws, stripe_emulator):
        service.up(ctx)
    return ctx


@pytest.fixture(scope="session", autouse=True)
def airflow_connections(ctx) -> Iterator[None]:
    """The sandbox's connections as AIRFLOW_CONN_* variables, for the hooks the jobs use."""
    conns = {}
    for service in (postgres, pgbouncer, sinks, aws, stripe_emulator):
        conns.update(service.connections(ctx))
    env = {f"AIRFLOW_CONN_{cid.upper()}": json.dumps(c) for cid, c in conns.items()}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def app_uri(ctx) -> str:
    """The application database through PgBouncer (transaction pooling), as the DAGs use it."""
    return db.app_db_uri()


@pytest.fixture(scope="session")
def primary_dsn(ctx) -> str:
    return postgres.dsn(ctx, "primary")


@pytest.fixture
def conn(app_uri) -> Iterator[psycopg.Connection]:
    with db.connect(app_uri, application_name="bisman-tests") as c:
        yield c


@pytest.fixture
def conn2(app_uri) -> Iterator[psycopg.Connection]:
    with db.connect(app_uri, application_name="bisman-tests") as c:
        yield c


class Tenants:
    """Creates tenants (and their usage, overrides) with ids of this test's own; cleans up."""

    def __init__(self, dsn: str):
        self.dsn = dsn
        self.base = ID_BASE + next(_ID_BLOCKS) * 1000
        self.ids: list[int] = []

    def _exec(self, sql: str, params=None) -> None:
        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=10) as c:
            c.execute(sql, params)

    def add(self, n: int = 1, *, plan: str = "free", status: str = "active", trial_ends_at=None,
            billing_email: str | None = "auto", stripe_subscription_id: str | None = None,
            created_at=None) -> int:
        tid = self.base + len(self.ids) + 1
        email = f"billing+t{tid}@tenants.bisman.test" if billing_email == "auto" else billing_email
        self._exec(
            "INSERT INTO tenants (id, slug, name, plan, status, trial_ends_at, billing_email, "
            "stripe_customer_id, stripe_subscription_id, created_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, COALESCE(%s, now()))",
            (tid, f"test-t{tid}", f"Test Tenant {tid}", plan, status, trial_ends_at, email,
             f"cus_t{tid}" if stripe_subscription_id else None, stripe_subscription_id, created_at))
        self.ids.append(tid)
        return tid

    def usage(self, tenant_id: int, day, metric: str, quantity: int) -> None:
        self._exec(
            "INSERT INTO client_daily_usage (tenant_id, usage_date, metric, quantity) "
            "VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (tenant_id, usage_date, metric) DO UPDATE SET quantity = EXCLUDED.quantity, "
            "updated_at = now()", (tenant_id, day, metric, quantity))

    def quota(self, tenant_id: int, metric: str, period: str, quota: int | None) -> None:
        self._exec("INSERT INTO tenant_quotas (tenant_id, metric, period, quota) VALUES (%s, %s, %s, %s)",
                   (tenant_id, metric, period, quota))

    def cleanup(self) -> None:
        if not self.ids:
            return
        self._exec("DELETE FROM events WHERE tenant_id = ANY(%s)", (self.ids,))
        # Claims outlive their events; a later session reusing these ids must start clean.
        self._exec("DELETE FROM bisman_ops_claims WHERE tenant_id = ANY(%s) OR dedup_key LIKE ANY(%s)",
                   (self.ids, [f"%summary-{t}" for t in self.ids]))
        self._exec("DELETE FROM tenant_usage WHERE tenant_id = ANY(%s)", (self.ids,))
        self._exec("DELETE FROM tenants WHERE id = ANY(%s)", (self.ids,))


@pytest.fixture
def tenants(primary_dsn) -> Iterator[Tenants]:
    t = Tenants(primary_dsn)
    yield t
    t.cleanup()


def rows(dsn: str, sql: str, params=None) -> list[tuple]:
    with psycopg.connect(dsn, connect_timeout=10) as c:
        return c.execute(sql, params).fetchall()


@pytest.fixture
def mail_sink(ctx):
    sinks.clear(ctx)
    return ctx


class StripeFaults:
    """A Stripe stand-in on 127.0.0.1 that forwards to the emulator, except that requests whose
    method is in ``failing`` get HTTP 500 with a Stripe-style error body."""

    def __init__(self, upstream: str):
        self.upstream = upstream
        self.failing: set[str] = set()
        self.seen: list[str] = []
        self.delay_s = 0.0  # widens each request, so concurrent callers overlap
        self.idempotency_keys: list[str] = []  # of the writes seen
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        faults = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _handle(self):
                # In flight until the answer is ready, not until it is written: the caller may send
                # its next request as soon as it reads this one's answer, before this thread is done.
                with faults._lock:
                    faults.in_flight += 1
                    faults.max_in_flight = max(faults.max_in_flight, faults.in_flight)
                try:
                    status, content = self._answer()
                finally:
                    with faults._lock:
                        faults.in_flight -= 1
                self._reply(status, content)

            def _answer(self) -> tuple[int, bytes]:
                faults.seen.append(f"{self.command} {self.path}")
                if self.command != "GET":
                    faults.idempotency_keys.append(self.headers.get("Idempotency-Key") or "")
                if faults.delay_s:
                    threading.Event().wait(faults.delay_s)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.command in faults.failing or "*" in faults.failing:
                    outage = {"error": {"type": "api_error", "message": "injected outage"}}
                    return 500, json.dumps(outage).encode()
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "content-length")}
                resp = requests.request(self.command, faults.upstream + self.path, data=body, headers=headers,
                                        timeout=10)
                return resp.status_code, resp.content

            def _reply(self, status: int, content: bytes):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = do_DELETE = _handle

        self.server = ThreadingHTTPServer((HOST, 0), Handler)
        self.url = f"http://{HOST}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stripe_faults(ctx) -> Iterator[StripeFaults]:
    f = StripeFaults(ctx.url("stripe"))
    yield f
    f.close()
