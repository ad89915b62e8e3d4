"""S3 through the provider's ``S3Hook`` (reports, Terraform state and plans)."""

from __future__ import annotations

from typing import Any

from bisman_ops import config
from bisman_ops.clients import aws


def hook(conn_id: str = config.AWS_CONN_ID) -> Any:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return aws.provider_hook(S3Hook, "s3", conn_id)


def put_text(
    bucket: str, key: str, text: str, *, content_type: str = "text/plain", s3_hook: Any = None
) -> str:
    """Write ``text`` to ``s3://bucket/key`` (replacing it); returns the key."""
    (s3_hook or hook()).get_conn().put_object(
        Bucket=bucket, Key=key, Body=text.encode("utf-8"), ContentType=content_type
    )
    return key


def get_text(bucket: str, key: str, *, s3_hook: Any = None) -> str | None:
    """The text at ``s3://bucket/key``, ``None`` when there is no such key."""
    h = s3_hook or hook()
    if not h.check_for_key(key, bucket_name=bucket):
        return None
    return h.read_key(key, bucket_name=bucket)
