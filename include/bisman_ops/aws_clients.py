"""boto3 clients with timeouts, the one way this project talks to AWS.

``client_from_connection`` is what DAG code uses: it goes through the Airflow connection, so the
endpoint (moto in the sandbox), region and credentials come from there. ``client`` builds one
directly (sandbox seeding, tests). Against a custom endpoint (moto) botocore makes a single
attempt: moto answers unimplemented calls with HTTP 500, which retries would only slow down.
(botocore's ``max_attempts`` counts retries, so ``{"max_attempts": 1}`` still sends a request
twice; ``total_max_attempts`` counts the first attempt too.)
"""

from __future__ import annotations

from typing import Any

from botocore.config import Config

from bisman_ops import config

CONNECT_TIMEOUT_S = 5
READ_TIMEOUT_S = 30
AWS_TOTAL_MAX_ATTEMPTS = 5


def botocore_config(*, endpoint_url: str | None) -> Config:
    """Timeouts and retries for a client; a single attempt against a custom endpoint."""
    attempts = 1 if endpoint_url else AWS_TOTAL_MAX_ATTEMPTS
    retries: dict[str, Any] = {"total_max_attempts": attempts, "mode": "standard"}
    return Config(connect_timeout=CONNECT_TIMEOUT_S, read_timeout=READ_TIMEOUT_S, retries=retries)


def client(service: str, *, region: str | None = None, endpoint_url: str | None = None) -> Any:
    """A boto3 client for ``service``, credentials from the usual boto3 chain."""
    import boto3

    return boto3.client(
        service,
        region_name=region,
        endpoint_url=endpoint_url,
        config=botocore_config(endpoint_url=endpoint_url),
    )


def client_from_connection(service: str, aws_conn_id: str = config.AWS_CONN_ID) -> Any:
    """A boto3 client for ``service`` built from the Airflow AWS connection ``aws_conn_id``.

    The connection's extra may carry ``endpoint_url``, ``region_name`` and botocore
    ``config_kwargs``; the provider applies them, and our timeouts and retries fill in whatever
    ``config_kwargs`` leaves unset.
    """
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    hook = AwsBaseHook(aws_conn_id=aws_conn_id, client_type=service)
    conn_config = hook.conn_config
    endpoint_url = conn_config.get_service_endpoint_url(service_name=service)
    defaults = botocore_config(endpoint_url=endpoint_url)
    # Config.merge lets the connection's own config_kwargs win over our defaults.
    merged = defaults.merge(conn_config.botocore_config) if conn_config.botocore_config else defaults
    return hook.get_client_type(config=merged)
