"""The checklist's load test (``npm run test:load -- --vus 100 --duration 5m``) with locust headless,
in a child process, against the application; judged like k6 thresholds.

``run`` starts ``python -m locust`` on ``include/load_tests/usage_metering_locustfile.py`` with the
tenants' tokens in a private file (never on a command line or in a log), waits for it within a
timeout, and reads the per-tenant, per-status counts and latencies the locustfile wrote.
``summarize`` turns them into p50/p95/p99, throughput and status counts; ``thresholds`` judges
them, each threshold on its own, and the check fails naming every threshold crossed:

- ``p(95) < p95_ms`` over every response except the expected 429s;
- ``error ratio < max_error_ratio``: responses other than 200 (no answer counts) out of all, the
  limited tenant's 429s excluded (they are the quota working);
- ``throughput > min_rps``: all responses per second of the test's duration.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bisman_ops.change.errors import CheckFailed, fail_unless

# Outside the package on purpose: importing it imports locust, which monkey-patches the process.
LOCUSTFILE = Path(__file__).resolve().parents[3] / "load_tests" / "usage_metering_locustfile.py"
STARTUP_ALLOWANCE_S = 120  # locust's start and stop around the run time
MAX_OUTPUT_CHARS = 2000


@dataclass(frozen=True)
class LoadShape:
    users: int
    duration_s: int
    spawn_rate: float
    p95_ms: float
    max_error_ratio: float
    min_rps: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def locust_argv(host: str, shape: LoadShape, results: Path) -> list[str]:
    return [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", host,
            "--users", str(shape.users), "--spawn-rate", str(shape.spawn_rate),
            "--run-time", f"{shape.duration_s}s", "--stop-timeout", "5", "--only-summary",
            "--exit-code-on-error", "0", "--loglevel", "WARNING", "--skip-log-setup"]


def run(host: str, tenants: list[dict[str, Any]], shape: LoadShape) -> dict[str, Any]:
    """Run the load test; the raw results (statuses per tenant id, latencies, elapsed seconds)."""
    with tempfile.TemporaryDirectory(prefix="bisman-load-") as tmp:
        tokens, results = Path(tmp, "tenants.json"), Path(tmp, "results.json")
        fd = os.open(tokens, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(tenants, f)
        env = {**os.environ, "BISMAN_LOAD_TENANTS": str(tokens), "BISMAN_LOAD_RESULTS": str(results)}
        try:
            done = subprocess.run(locust_argv(host, shape, results), env=env, capture_output=True, text=True,
                                  timeout=shape.duration_s + STARTUP_ALLOWANCE_S, check=False)
        except subprocess.TimeoutExpired:
            raise CheckFailed("the locust load test", f"still running after {shape.duration_s} s + "
                              f"{STARTUP_ALLOWANCE_S} s", "it to end after its duration",
                              "Check the worker's load, then clear this task") from None
        if done.returncode != 0 or not results.exists():
            output = (done.stderr or done.stdout or "")[-MAX_OUTPUT_CHARS:]
            raise CheckFailed("the locust load test", f"exit code {done.returncode}: {output.strip()}",
                              "a completed run with its results", "Fix the cause, then clear this task")
        return json.loads(results.read_text(encoding="utf-8"))


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0-100), None without values."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)], 1)


def summarize(raw: dict[str, Any], tenants: list[dict[str, Any]], shape: LoadShape) -> dict[str, Any]:
    expect_429 = {str(t["id"]) for t in tenants if t["expect_429"]}
    statuses: dict[str, int] = {}
    per_tenant: dict[str, dict[str, int]] = {}
    total = errors = expected_429 = 0
    for tenant_id, counts in raw["statuses"].items():
        per_tenant[tenant_id] = {k: int(v) for k, v in counts.items()}
        for status, n in counts.items():
            n = int(n)
            statuses[status] = statuses.get(status, 0) + n
            total += n
            if status == "429" and tenant_id in expect_429:
                expected_429 += n
            elif status != "200":
                errors += n
    elapsed = raw.get("elapsed_s") or shape.duration_s
    latencies = raw.get("latencies_ms") or []
    return {
        "users": shape.users, "duration_s": shape.duration_s, "elapsed_s": round(elapsed, 1),
        "requests": total, "status_counts": dict(sorted(statuses.items())), "per_tenant": per_tenant,
        "expected_429": expected_429, "errors": errors,
        "error_ratio": round(errors / total, 4) if total else None,
        "throughput_rps": round(total / elapsed, 2) if elapsed else None,
        "p50_ms": percentile(latencies, 50), "p95_ms": percentile(latencies, 95),
        "p99_ms": percentile(latencies, 99),
    }


def thresholds(stats: dict[str, Any], shape: LoadShape) -> list[dict[str, Any]]:
    """k6-style thresholds: each expression, the value seen, passed or not."""
    def row(expression: str, seen: Any, passed: bool) -> dict[str, Any]:
        return {"threshold": expression, "seen": seen, "passed": bool(passed)}

    p95, ratio, rps = stats["p95_ms"], stats["error_ratio"], stats["throughput_rps"]
    return [
        row(f"p(95) < {shape.p95_ms:g} ms", p95, p95 is not None and p95 < shape.p95_ms),
        row(f"error ratio < {shape.max_error_ratio:g} (expected 429s excluded)", ratio,
            ratio is not None and ratio < shape.max_error_ratio),
        row(f"throughput > {shape.min_rps:g} req/s", rps, rps is not None and rps > shape.min_rps),
    ]


def judge(stats: dict[str, Any], shape: LoadShape) -> list[dict[str, Any]]:
    rows = thresholds(stats, shape)
    crossed = [f"{r['threshold']} crossed: seen {r['seen']}" for r in rows if not r["passed"]]
    if not stats["requests"]:
        crossed.insert(0, "the load test made no request")
    fail_unless(crossed, f"load test ({shape.users} users, {shape.duration_s} s)", "every threshold met",
                "Look at the application's latency and errors under load (its logs and metrics), then "
                "clear this task", {**stats, "thresholds": rows})
    return rows
