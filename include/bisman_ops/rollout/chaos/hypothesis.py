"""The chaos drills' steady-state hypothesis and their watch during a fault (the Chaos Toolkit's
shape: the hypothesis holds before, the system copes during, and it holds again after).

The hypothesis: the three health endpoints answer 200, a short probe of reads through the
application (``/api/admin/tenants/{id}/usage``: primary, replica and the routing between them)
stays under the error ratio and p95 limits, and Prometheus fires none of the alerts a drill could
set off. The watch runs the probe while the fault is on; the stop condition aborts the drill when
customers would see errors for longer than the form allows.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bisman_ops.clients.app_http import HEALTH_PATHS

PROBE_REQUESTS = 10
WATCH_INTERVAL_S = 1.0
# What a drill could set off; the Watchdog always fires and the quota job's alerts are not about it.
STEADY_STATE_ALERTS = frozenset({
    "BismanAppDown", "BismanDatabaseDown", "BismanRedisDown", "BismanHighErrorRatio",
    "BismanHighLatencyP95", "BismanReplicaLagHigh",
})


@dataclass(frozen=True)
class Limits:
    """The hypothesis' limits and the stop condition, from the form."""

    error_ratio: float = 0.0  # steady state: no failed read at all
    p95_ms: float = 1000.0
    stop_error_ratio: float = 0.5  # during the fault: a probe round failing more than this ...
    stop_after_s: float = 20.0  # ... for this long aborts the drill
    recovery_timeout_s: float = 180.0


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None without values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def _status(call: Callable[[], Any]) -> tuple[str, float]:
    started = time.perf_counter()
    try:
        code = str(call().status_code)
    except Exception as exc:  # a refused or reset connection is an error the probe counts
        code = type(exc).__name__
    return code, (time.perf_counter() - started) * 1000


def probe(http: Callable[..., Any], token: str, tenant_id: int,
          requests: int = PROBE_REQUESTS) -> dict[str, Any]:
    """Health endpoints once each, then ``requests`` reads; status counts, error ratio, p50/p95."""
    health = {path: _status(lambda p=path: http("GET", p, headers={}))[0] for path in HEALTH_PATHS}
    statuses: dict[str, int] = {}
    latencies: list[float] = []
    auth = {"Authorization": f"Bearer {token}"}
    for _ in range(requests):
        code, ms = _status(lambda: http("GET", f"/api/admin/tenants/{tenant_id}/usage", headers=auth))
        statuses[code] = statuses.get(code, 0) + 1
        latencies.append(ms)
    errors = sum(n for code, n in statuses.items() if not code.startswith("2"))
    return {
        "health": health,
        "requests": requests,
        "statuses": statuses,
        "error_ratio": round(errors / requests, 3) if requests else 0.0,
        "p50_ms": round(percentile(latencies, 50) or 0.0, 1),
        "p95_ms": round(percentile(latencies, 95) or 0.0, 1),
    }


def drill_alerts(firing: list[dict[str, Any]]) -> list[str]:
    """The firing alerts (Prometheus' ``/api/v1/alerts``) that break the hypothesis."""
    return sorted({a["labels"]["alertname"] for a in firing
                   if a.get("labels", {}).get("alertname") in STEADY_STATE_ALERTS})


def problems(measured: dict[str, Any], alerts: list[str], limits: Limits) -> list[str]:
    """Where the steady state does not hold: unhealthy endpoints, errors, latency, alerts."""
    out = [f"GET {path} answered {code}" for path, code in measured["health"].items() if code != "200"]
    if measured["error_ratio"] > limits.error_ratio:
        out.append(f"error ratio {measured['error_ratio']} > {limits.error_ratio} ({measured['statuses']})")
    if measured["p95_ms"] > limits.p95_ms:
        out.append(f"p95 {measured['p95_ms']} ms > {limits.p95_ms:g} ms")
    out += [f"alert {name} firing" for name in alerts]
    return out


def watch(coped: Callable[[], tuple[bool, dict[str, Any]]], probe_round: Callable[[], dict[str, Any]],
          limits: Limits, clock: Callable[[], float] = time.monotonic,
          sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """With the fault on: probe until the system copes (``coped`` true and the probe below the stop
    ratio), the stop condition fires (probe rounds over ``stop_error_ratio`` for ``stop_after_s``),
    or ``recovery_timeout_s`` ends. Returns the journal's ``during`` part; ``outcome`` is
    ``coped``, ``stop_condition`` or ``timed_out``."""
    started = clock()
    bad_since: float | None = None
    rounds = requests = errors = 0
    worst = 0.0
    state: dict[str, Any] = {}
    while True:
        measured = probe_round()
        now = clock()
        rounds += 1
        requests += measured["requests"]
        errors += round(measured["error_ratio"] * measured["requests"])
        worst = max(worst, measured["error_ratio"])
        over = measured["error_ratio"] > limits.stop_error_ratio
        bad_since = (bad_since if bad_since is not None else now) if over else None
        done, state = coped()
        outcome = None
        if bad_since is not None and now - bad_since >= limits.stop_after_s:
            outcome = "stop_condition"
        elif done and not over:
            outcome = "coped"
        elif now - started >= limits.recovery_timeout_s:
            outcome = "timed_out"
        if outcome:
            return {"outcome": outcome, "stop_condition_fired": outcome == "stop_condition",
                    "seconds": round(now - started, 1), "probe_rounds": rounds, "requests": requests,
                    "errors": errors, "worst_error_ratio": worst, "last_probe": measured, "state": state}
        sleep(WATCH_INTERVAL_S)
