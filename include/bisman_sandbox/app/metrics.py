"""Prometheus metrics that add up across gunicorn's worker processes.

prometheus_client is not in the venv, so each worker keeps its counters in memory and, after
every request, rewrites them to ``<METRICS_DIR>/worker-<pid>.json`` (atomically, by rename).
``/metrics`` sums every file it finds, including those of workers that died, so counters never go
backwards when gunicorn replaces a worker. Gauges (db/redis up) are measured at scrape time.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections import defaultdict
from pathlib import Path

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, math.inf)

_FAMILIES = {
    "http_requests_total": ("counter", "HTTP requests handled, by method, route and status."),
    "http_request_duration_seconds": ("histogram", "HTTP request duration, by route."),
    "app_db_route_total": ("counter", "Routed database accesses: replica, fallback or primary-write."),
    "app_quota_rejections_total": ("counter", "Tenant requests refused with 429, by period."),
    "app_database_up": ("gauge", "1 when the PgBouncer pool answers SELECT 1, by pool."),
    "app_redis_up": ("gauge", "1 when the Redis master (through Sentinel) answers PING."),
    "app_tenant_requests_total": ("counter", "Authenticated tenant requests, by tenant and status."),
    "app_tenant_quota_used_ratio": ("gauge", "A tenant's api_calls usage over its quota, by period."),
    "app_database_replica_lag_seconds": ("gauge", "Replay lag of the read replica (0 when caught up)."),
}

Labels = tuple[tuple[str, str], ...]


class Metrics:
    def __init__(self, directory: str | None):
        self._dir = Path(directory) if directory else None
        self._lock = threading.Lock()
        self._values: dict[tuple[str, Labels], float] = defaultdict(float)

    def inc(self, name: str, labels: dict[str, str], amount: float = 1.0) -> None:
        with self._lock:
            self._values[(name, _key(labels))] += amount
            self._flush()

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self._values[("http_requests_total", _key({"method": method, "route": route,
                                                       "status": str(status)}))] += 1
            for bound in DURATION_BUCKETS:
                if seconds <= bound:
                    le = "+Inf" if bound == math.inf else repr(bound)
                    self._values[("http_request_duration_seconds_bucket",
                                  _key({"route": route, "le": le}))] += 1
            self._values[("http_request_duration_seconds_sum", _key({"route": route}))] += seconds
            self._values[("http_request_duration_seconds_count", _key({"route": route}))] += 1
            self._flush()

    def _flush(self) -> None:
        if self._dir is None:
            return
        self._dir.mkdir(parents=True, exist_ok=True)
        target = self._dir / f"worker-{os.getpid()}.json"
        tmp = target.with_suffix(".tmp")
        entries = [[name, list(labels), value] for (name, labels), value in self._values.items()]
        tmp.write_text(json.dumps(entries))
        os.replace(tmp, target)

    def collect(self) -> dict[tuple[str, Labels], float]:
        """Every worker's values, summed."""
        if self._dir is None:
            with self._lock:
                return dict(self._values)
        total: dict[tuple[str, Labels], float] = defaultdict(float)
        for f in sorted(self._dir.glob("worker-*.json")):
            try:
                entries = json.loads(f.read_text())
            except (OSError, ValueError):
                continue  # a file being replaced right now; it is complete at the next scrape
            for name, labels, value in entries:
                total[(name, tuple(tuple(pair) for pair in labels))] += value
        return total

    def render(self, gauges: dict[tuple[str, Labels], float]) -> str:
        values = {**self.collect(), **gauges}
        by_family: dict[str, list[str]] = defaultdict(list)
        for (name, labels), value in sorted(values.items(), key=lambda kv: _sort_key(*kv[0])):
            by_family[_family(name)].append(f"{name}{_format_labels(labels)} {_format_value(value)}")
        lines = []
        for family, samples in by_family.items():
            kind, doc = _FAMILIES.get(family, ("untyped", family))
            lines += [f"# HELP {family} {doc}", f"# TYPE {family} {kind}", *samples]
        return "\n".join(lines) + "\n"


def gauge(name: str, labels: dict[str, str], up: bool) -> dict[tuple[str, Labels], float]:
    return {(name, _key(labels)): 1.0 if up else 0.0}


def _key(labels: dict[str, str]) -> Labels:
    return tuple(sorted(labels.items()))


def _family(name: str) -> str:
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[: -len(suffix)] in _FAMILIES:
            return name[: -len(suffix)]
    return name


def _sort_key(name: str, labels: Labels) -> tuple:
    # A histogram's series stay together: buckets by ascending bound, then _count and _sum.
    others = tuple(pair for pair in labels if pair[0] != "le")
    bound = next((float(v) for k, v in labels if k == "le"), 0.0)
    return (_family(name), others, name, bound)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _format_labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels) + "}"


def _format_value(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)
