"""Parse time of each DAG file against an empty DAG file that imports only airflow.sdk.

Each measurement is a fresh interpreter timing its own import of one file (what the dag-processor
pays per file), so the ~3 s import of airflow.sdk is in both sides of the ratio. Target: every DAG
file within 1.3x of the empty file.

    .venv/bin/python bench/parse.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = 1.3
EMPTY_DAG = '''"""Baseline: an empty DAG file."""
from airflow.sdk import DAG

with DAG(dag_id="empty_baseline", schedule=None):
    pass
'''
TIMER = (
    "import time, runpy, sys\n"
    "t = time.perf_counter()\n"
    "runpy.run_path(sys.argv[1])\n"
    "print(time.perf_counter() - t)\n"
)


def parse_seconds(path: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "include")}
    out = subprocess.run([sys.executable, "-c", TIMER, str(path)], capture_output=True, text=True,
                         env=env, timeout=300, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    dag_files = sorted((ROOT / "dags").glob("*.py"))
    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "empty_dag.py"
        empty.write_text(EMPTY_DAG)
        samples: dict[str, list[float]] = {"(empty baseline)": []}
        samples.update({p.name: [] for p in dag_files})
        # Interleave files in each round so drift on a busy machine hits all of them alike.
        for _ in range(args.repeat):
            samples["(empty baseline)"].append(parse_seconds(empty))
            for p in dag_files:
                samples[p.name].append(parse_seconds(p))
    baseline = statistics.median(samples["(empty baseline)"])
    worst = 0.0
    print(f"{'file':<40} {'median s':>9} {'ratio':>7}")
    for name, values in samples.items():
        median = statistics.median(values)
        ratio = median / baseline
        if name != "(empty baseline)":
            worst = max(worst, ratio)
        flag = "" if ratio <= TARGET else "  over target"
        print(f"{name:<40} {median:>9.3f} {ratio:>7.2f}{flag}")
    print(f"worst ratio {worst:.2f} (target <= {TARGET})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
