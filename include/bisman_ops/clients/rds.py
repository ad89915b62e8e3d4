"""RDS states through the provider's ``RdsHook``: one look for a sensor's poke (``instance_state``,
``snapshot_state``, ``None`` when it does not exist) and botocore's waiters for a bounded wait in
one call (``wait_instance_available``)."""

from __future__ import annotations

from typing import Any

from bisman_ops import config
from bisman_ops.clients import aws

# Statuses from which an instance does not become available without someone acting.
INSTANCE_TERMINAL = (
    "failed",
    "incompatible-restore",
    "incompatible-parameters",
    "incompatible-network",
    "inaccessible-encryption-credentials",
    "storage-full",
    "deleting",
    "restore-error",
)
SNAPSHOT_TERMINAL = ("failed", "deleted", "error")


def hook(conn_id: str = config.AWS_CONN_ID) -> Any:
    from airflow.providers.amazon.aws.hooks.rds import RdsHook

    return aws.provider_hook(RdsHook, "rds", conn_id)


def instance_state(identifier: str, rds_hook: Any = None) -> str | None:
    from airflow.exceptions import AirflowNotFoundException

    try:
        return (rds_hook or hook()).get_db_instance_state(identifier)
    except AirflowNotFoundException:
        return None


def snapshot_state(identifier: str, rds_hook: Any = None) -> str | None:
    from airflow.exceptions import AirflowNotFoundException

    try:
        return (rds_hook or hook()).get_db_snapshot_state(identifier)
    except AirflowNotFoundException:
        return None


def wait_instance_available(
    identifier: str, *, delay_s: int = 30, max_attempts: int = 60, rds_hook: Any = None
) -> None:
    """Block until ``identifier`` is available (botocore's ``db_instance_available`` waiter)."""
    (rds_hook or hook()).wait_for_db_instance_state(
        identifier, "available", check_interval=delay_s, max_attempts=max_attempts
    )
