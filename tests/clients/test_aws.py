"""boto3 clients through AwsBaseHook, provider hooks with our config, and the one error-code helper."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from bisman_ops.clients import aws, rds, s3

pytestmark = pytest.mark.sandbox


def test_error_code_reads_client_errors_and_nothing_else():
    err = ClientError({"Error": {"Code": "DBInstanceNotFound", "Message": "x"}}, "DescribeDBInstances")
    assert aws.error_code(err) == "DBInstanceNotFound"
    assert aws.error_code(ValueError("no response")) == ""
    assert aws.error_code(ClientError({}, "Op")) == ""


def test_provider_hooks_get_our_timeouts_and_one_attempt_against_moto(ctx, airflow_conns):
    client = rds.hook().conn
    assert client.meta.endpoint_url == ctx.url("moto")
    assert client.meta.config.connect_timeout == aws.CONNECT_TIMEOUT_S
    assert client.meta.config.retries["total_max_attempts"] == 1


def test_rds_states_say_none_for_what_does_not_exist(airflow_conns):
    assert rds.instance_state("no-such-instance-anywhere") is None
    assert rds.snapshot_state("no-such-snapshot-anywhere") is None
    some = aws.client("rds").describe_db_instances()["DBInstances"][0]
    assert rds.instance_state(some["DBInstanceIdentifier"]) == some["DBInstanceStatus"]


def test_s3_text_round_trip_and_missing_key(airflow_conns):
    bucket = aws.client("s3").list_buckets()["Buckets"][0]["Name"]
    s3.put_text(bucket, "clients-test/hello.txt", "héllo")
    assert s3.get_text(bucket, "clients-test/hello.txt") == "héllo"
    assert s3.get_text(bucket, "clients-test/absent.txt") is None
