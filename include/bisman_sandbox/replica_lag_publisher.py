"""Publish the sandbox replica's real lag as the CloudWatch metric ``AWS/RDS`` ``ReplicaLag``.

moto has no RDS metrics of its own, so this background process stands in for RDS: every few
seconds it commits a transaction on the primary, waits briefly for the replica to replay it and
puts the measured lag into moto. When the replica (or the primary it lags behind) cannot be
reached it publishes nothing, as RDS reports no datapoint then. ``BISMAN_SANDBOX_REPLICA_LAG_OVERRIDE``
(seconds) makes it publish that value instead, so a test can hold the lag gate shut.

Run by ``aws.up`` as ``python -m bisman_sandbox.replica_lag_publisher``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from datetime import UTC, datetime
from typing import Any

from bisman_sandbox import context
from bisman_sandbox.context import HOST, SandboxContext
from bisman_sandbox.process import is_running, start_process, stop_process

PROCESS_NAME = "replica-lag-publisher"
OVERRIDE_ENV = "BISMAN_SANDBOX_REPLICA_LAG_OVERRIDE"
INTERVAL_S = 5.0
SETTLE_S = 1.0  # how long to wait for the replica to replay the probe before falling back
CONNECT_TIMEOUT_S = 2
NAMESPACE = "AWS/RDS"
METRIC_NAME = "ReplicaLag"

log = logging.getLogger("replica_lag_publisher")


def conninfo(port: int) -> str:
    """libpq connection string for the sandbox database on ``port`` (password from context.py)."""
    return (
        f"host={HOST} port={port} dbname={context.DB_NAME} user={context.DB_USER} "
        f"password={context.DB_PASSWORD} connect_timeout={CONNECT_TIMEOUT_S} "
        "options='-c statement_timeout=2000' application_name=replica-lag-publisher"
    )


def measure_replica_lag(
    primary_conninfo: str, replica_conninfo: str, settle_s: float = SETTLE_S
) -> float | None:
    """Seconds the replica is behind the primary, or None when it cannot be measured.

    Commits a probe transaction on the primary, then polls the replica for up to ``settle_s``
    until it has replayed that commit: the lag is the time that took. If it has not, the lag is ``now() -
    pg_last_xact_replay_timestamp()`` on the replica, which is at least the probe's age.
    None when either server is unreachable or the "replica" is not in recovery (promoted).
    """
    import psycopg

    try:
        with (
            psycopg.connect(replica_conninfo, autocommit=True) as replica,
            psycopg.connect(primary_conninfo, autocommit=True) as primary,
        ):
            if not replica.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                return None
            written_at = time.monotonic()
            # A transactional WAL message commits without touching a table and, having written
            # WAL, is flushed (and so streamed) at once; an xid-only commit would be asynchronous.
            with primary.transaction():
                primary.execute("SELECT pg_logical_emit_message(true, 'bisman_lag_probe', '')")
            (lsn,) = primary.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
            while True:
                (replayed,) = replica.execute(
                    "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,)
                ).fetchone()
                elapsed = time.monotonic() - written_at
                if replayed:
                    return elapsed
                if elapsed >= settle_s:
                    break
                time.sleep(0.05)
            (since_replay,) = replica.execute(
                "SELECT EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())::float8"
            ).fetchone()
            return max(since_replay or 0.0, elapsed)
    except psycopg.Error as exc:
        log.debug("replica lag not measurable: %s", type(exc).__name__)
        return None


def put_replica_lag(cloudwatch: Any, replica_id: str, seconds: float) -> None:
    cloudwatch.put_metric_data(
        Namespace=NAMESPACE,
        MetricData=[
            {
                "MetricName": METRIC_NAME,
                "Dimensions": [{"Name": "DBInstanceIdentifier", "Value": replica_id}],
                "Timestamp": datetime.now(UTC),
                "Value": seconds,
                "Unit": "Seconds",
            }
        ],
    )


def publish_once(cloudwatch: Any, replica_id: str, primary_port: int, replica_port: int) -> float | None:
    """Measure (or take the override) and publish; return what was published, None for nothing."""
    override = os.environ.get(OVERRIDE_ENV)
    if override:
        lag: float | None = float(override)
    else:
        lag = measure_replica_lag(conninfo(primary_port), conninfo(replica_port))
    if lag is not None:
        put_replica_lag(cloudwatch, replica_id, lag)
    return lag


# --- the background process -------------------------------------------------------------------


def start(ctx: SandboxContext, *, replica_id: str) -> int:
    """Start the publisher for ``ctx`` unless it runs already (an override set in our env is inherited)."""
    from bisman_sandbox import aws

    argv = [
        sys.executable,
        "-m",
        "bisman_sandbox.replica_lag_publisher",
        "--moto-url",
        aws.endpoint_url(ctx),
        "--replica-id",
        replica_id,
        "--primary-port",
        str(ctx.port("postgres_primary")),
        "--replica-port",
        str(ctx.port("postgres_replica")),
    ]
    include_dir = str(context.PROJECT_ROOT / "include")
    pythonpath = os.pathsep.join(p for p in (include_dir, os.environ.get("PYTHONPATH")) if p)
    return start_process(ctx, PROCESS_NAME, argv, env={"PYTHONPATH": pythonpath})


def stop(ctx: SandboxContext) -> None:
    stop_process(ctx, PROCESS_NAME)


def running(ctx: SandboxContext) -> bool:
    return is_running(ctx, PROCESS_NAME)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moto-url", required=True)
    parser.add_argument("--replica-id", required=True)
    parser.add_argument("--primary-port", type=int, required=True)
    parser.add_argument("--replica-port", type=int, required=True)
    parser.add_argument("--interval", type=float, default=INTERVAL_S)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    import boto3

    from bisman_ops.clients import aws as aws_client
    from bisman_sandbox import aws

    cloudwatch = boto3.session.Session(
        aws_access_key_id=aws.FAKE_ACCESS_KEY_ID,
        aws_secret_access_key=aws.FAKE_SECRET_ACCESS_KEY,
        region_name=context.AWS_REGION,
    ).client(
        "cloudwatch",
        endpoint_url=args.moto_url,
        config=aws_client.botocore_config(endpoint_url=args.moto_url),
    )
    log.info("publishing %s/%s for %s every %.0f s", NAMESPACE, METRIC_NAME, args.replica_id, args.interval)
    publishing: bool | None = None
    while True:
        started = time.monotonic()
        try:
            lag = publish_once(cloudwatch, args.replica_id, args.primary_port, args.replica_port)
            if (lag is not None) != publishing:
                publishing = lag is not None
                log.info(
                    "replica lag %s",
                    f"{lag:.3f} s, publishing" if publishing else "not measurable, publishing nothing",
                )
        except Exception as exc:  # moto restarting, a network hiccup: try again next round
            log.warning("publishing replica lag failed: %s: %s", type(exc).__name__, exc)
        time.sleep(max(0.0, args.interval - (time.monotonic() - started)))


if __name__ == "__main__":
    main()
