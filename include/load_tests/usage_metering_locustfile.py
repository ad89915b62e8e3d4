"""The rollout's load test (``bisman_ops.rollout.usage_metering.load_test.run`` runs locust on it in a
child process). Kept outside ``bisman_ops`` so that nothing imports it: importing locust
monkey-patches the process with gevent.

Each simulated user is one test tenant's client (round robin over the tenants file, the limited
tenant first) calling the metered endpoint with that tenant's bearer token. Every response is
recorded per tenant and status; the latencies of all but the expected 429s are kept for the
percentiles. At the end the results are written as JSON where ``BISMAN_LOAD_RESULTS`` says.
"""

import itertools
import json
import os
import time
from collections import Counter, defaultdict

from locust import HttpUser, between, events, task

METERED_PATH = os.environ.get("BISMAN_LOAD_PATH", "/api/usage/quota")
with open(os.environ["BISMAN_LOAD_TENANTS"], encoding="utf-8") as f:
    TENANTS = json.load(f)
_next_tenant = itertools.count()
_statuses: dict[str, Counter] = defaultdict(Counter)
_latencies_ms: list[float] = []
_window = {"started": None, "stopped": None}


class TenantClient(HttpUser):
    wait_time = between(0.5, 1.5)  # a client's think time: ~1 request per user per second

    def on_start(self):
        self.tenant = TENANTS[next(_next_tenant) % len(TENANTS)]
        self.headers = {"Authorization": f"Bearer {self.tenant['token']}"}

    @task
    def metered_call(self):
        with self.client.get(METERED_PATH, headers=self.headers, name=f"tenant {self.tenant['id']}",
                             context={"tenant": self.tenant}, catch_response=True) as response:
            if response.status_code == 429 and self.tenant["expect_429"]:
                response.success()  # the limited tenant's refusals are what the test expects
            elif response.status_code != 200:
                response.failure(f"HTTP {response.status_code}")


@events.request.add_listener
def _record(response_time, response=None, context=None, exception=None, **_kwargs):
    tenant = (context or {}).get("tenant") or {}
    status = getattr(response, "status_code", 0) or 0
    _statuses[str(tenant.get("id"))][str(status)] += 1
    if not (status == 429 and tenant.get("expect_429")):
        _latencies_ms.append(float(response_time))


@events.test_start.add_listener
def _started(**_kwargs):
    _window["started"] = time.monotonic()


@events.test_stop.add_listener
def _stopped(**_kwargs):
    _window["stopped"] = time.monotonic()


@events.quitting.add_listener
def _write(**_kwargs):
    started, stopped = _window["started"], _window["stopped"] or time.monotonic()
    with open(os.environ["BISMAN_LOAD_RESULTS"], "w", encoding="utf-8") as out:
        json.dump({"statuses": {t: dict(c) for t, c in _statuses.items()}, "latencies_ms": _latencies_ms,
                   "elapsed_s": (stopped - started) if started else None}, out)
