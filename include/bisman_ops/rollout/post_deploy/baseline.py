"""The performance baseline: the checklist's ``hey -n 1000 -c 50`` against a health endpoint, as a
measurement rather than a glance. Several runs after a warm-up, each summarised (p50/p95/p99,
throughput, errors); the runs are compared with the environment's previous baseline, and a
regression is both a practical and a significant slowdown: the median p95 above ``ratio_limit``
times the baseline's **and** a one-sided Mann-Whitney U test (exact) over the runs' p95s at
p < ``alpha``. With fewer than 5 runs on either side the exact test cannot reach p < 0.01, hence
``MIN_RUNS``. The baseline is stored per environment (JSON in the state bucket), replaced only by
a run that did not regress.
"""

from __future__ import annotations

import csv
import io
import statistics
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

MIN_RUNS = 5
HEY_TIMEOUT_S = 300
HEY_REQUEST_TIMEOUT_S = 10


@dataclass(frozen=True)
class LoadRun:
    requests: int
    errors: int  # no answer, or not a 2xx
    p50_ms: float
    p95_ms: float
    p99_ms: float
    rps: float


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0-1), nearest rank: a latency that was really seen."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q * len(ordered) + 0.5)))
    return ordered[rank - 1]


def parse_hey_csv(text: str, expected: int) -> LoadRun:
    """``hey -o csv``: one row per answered request (``response-time`` s, ``status-code``,
    ``offset`` s from the start). Requests missing from the rows got no answer: errors."""
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows:
        return LoadRun(expected, expected, 0.0, 0.0, 0.0, 0.0)
    latencies = [float(r["response-time"]) * 1000 for r in rows]
    ends = [float(r["offset"]) + float(r["response-time"]) for r in rows]
    bad = sum(not 200 <= int(r["status-code"]) < 300 for r in rows)
    elapsed = max(ends) or 1e-9
    return LoadRun(requests=expected, errors=bad + max(0, expected - len(rows)),
                   p50_ms=round(percentile(latencies, 0.50), 2), p95_ms=round(percentile(latencies, 0.95), 2),
                   p99_ms=round(percentile(latencies, 0.99), 2), rps=round(len(rows) / elapsed, 1))


def requests_sent(requests: int, concurrency: int) -> int:
    """What ``hey -n requests -c concurrency`` sends: each of its workers sends ``n // c`` (150 at 20
    is 140), so a count not divisible by the concurrency must not count the rest as unanswered."""
    if requests < concurrency:
        raise ValueError(f"hey needs at least as many requests as concurrency ({requests} < {concurrency})")
    return requests // concurrency * concurrency


def hey(url: str, requests: int, concurrency: int, binary: str = "hey") -> LoadRun:
    sent = requests_sent(requests, concurrency)
    argv = [binary, "-n", str(requests), "-c", str(concurrency), "-t", str(HEY_REQUEST_TIMEOUT_S),
            "-o", "csv", url]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=HEY_TIMEOUT_S,
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise RuntimeError(f"no {binary!r} to load the endpoint with (Debian: apt-get install hey)") from None
    if done.returncode != 0:
        raise RuntimeError(f"hey failed (exit {done.returncode}): {done.stderr.strip()[-300:]}")
    return parse_hey_csv(done.stdout, sent)


def measure(url: str, runs: int, requests: int, concurrency: int) -> list[LoadRun]:
    """A warm-up run (not kept), then ``runs`` runs."""
    hey(url, max(concurrency, requests // 5), concurrency)
    return [hey(url, requests, concurrency) for _ in range(runs)]


def compare(current: Sequence[float], baseline: Sequence[float], ratio_limit: float, alpha: float) -> dict:
    """Median p95 ratio and the one-sided exact Mann-Whitney p-value (current slower)."""
    from scipy.stats import mannwhitneyu

    ratio = statistics.median(current) / max(statistics.median(baseline), 1e-9)
    p_value = float(mannwhitneyu(current, baseline, alternative="greater", method="exact").pvalue)
    return {"median_p95_ratio": round(ratio, 3), "mann_whitney_p": round(p_value, 5),
            "ratio_limit": ratio_limit, "alpha": alpha, "regressed": ratio > ratio_limit and p_value < alpha}


def record(runs: Sequence[LoadRun], url: str, build: str, measured_at: str) -> dict[str, Any]:
    return {"url": url, "build": build, "measured_at": measured_at, "runs": [asdict(r) for r in runs],
            "p95_ms": [r.p95_ms for r in runs]}
