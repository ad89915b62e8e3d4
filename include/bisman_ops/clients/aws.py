"""AWS through the Amazon provider's ``AwsBaseHook``: boto3 clients with timeouts and bounded
retries, and the one way to read a botocore error's code.

The Airflow connection's extra carries ``endpoint_url`` (moto in the sandbox), ``region_name`` and
botocore ``config_kwargs``; the provider applies them and our timeouts and retries fill in whatever
``config_kwargs`` leaves unset. Against a custom endpoint botocore makes a single attempt (moto
answers unimplemented calls with HTTP 500, which retries would only slow down). botocore's
``max_attempts`` counts retries, ``total_max_attempts`` counts the first attempt too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bisman_ops import config

if TYPE_CHECKING:
    from botocore.config import Config

CONNECT_TIMEOUT_S = 5
READ_TIMEOUT_S = 30
AWS_TOTAL_MAX_ATTEMPTS = 5


def botocore_config(*, endpoint_url: str | None) -> Config:
    """Timeouts and retries for a client; a single attempt against a custom endpoint."""
    from botocore.config import Config

    attempts = 1 if endpoint_url else AWS_TOTAL_MAX_ATTEMPTS
    retries: dict[str, Any] = {"total_max_attempts": attempts, "mode": "standard"}
    return Config(connect_timeout=CONNECT_TIMEOUT_S, read_timeout=READ_TIMEOUT_S, retries=retries)


def hook(service: str, conn_id: str = config.AWS_CONN_ID) -> Any:
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    return AwsBaseHook(aws_conn_id=conn_id, client_type=service)


def client_config(aws_hook: Any, service: str) -> Config:
    """Our defaults merged under the connection's own ``config_kwargs`` (those win)."""
    conn_config = aws_hook.conn_config
    defaults = botocore_config(endpoint_url=conn_config.get_service_endpoint_url(service_name=service))
    return defaults.merge(conn_config.botocore_config) if conn_config.botocore_config else defaults


def client(service: str, conn_id: str = config.AWS_CONN_ID, *, attempts: int | None = None) -> Any:
    """A boto3 client for ``service`` from the Airflow AWS connection ``conn_id``. ``attempts=1``
    for a call that must not be repeated by botocore (a deployment: the caller checks first)."""
    from botocore.config import Config

    h = hook(service, conn_id)
    cfg = client_config(h, service)
    if attempts is not None:
        cfg = cfg.merge(Config(retries={"total_max_attempts": attempts, "mode": "standard"}))
    return h.get_client_type(config=cfg)


def provider_hook(hook_cls: type, service: str, conn_id: str = config.AWS_CONN_ID) -> Any:
    """One of the provider's service hooks (``RdsHook``, ``S3Hook``, ``EcsHook``) with our timeouts and
    retries under the connection's own ``config_kwargs``."""
    return hook_cls(aws_conn_id=conn_id, config=client_config(hook(service, conn_id), service))


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ``ClientError`` (``""`` for anything else)."""
    return str(((getattr(exc, "response", None) or {}).get("Error") or {}).get("Code") or "")
