"""The sandbox's AWS endpoint (moto extended, bisman_sandbox.aws_endpoint): the product's own AWS
implementations called against it have AWS's effect on the local services."""

from __future__ import annotations

import time

from bisman_ops.rollout.read_replica import RdsRebootControl
from bisman_sandbox import aws, aws_endpoint, postgres


def test_rebooting_the_read_replica_takes_the_local_replica_down_and_it_comes_back_available(sandbox):
    rds = aws.client(sandbox, "rds")
    replica = aws.names().db_replica_identifier
    control = RdsRebootControl(rds, replica, timeout_s=120)

    down = control.take_down()
    rebooting = rds.describe_db_instances(DBInstanceIdentifier=replica)["DBInstances"][0]["DBInstanceStatus"]
    streaming_meanwhile = postgres.replica_streaming(sandbox)
    started = time.monotonic()
    back = control.restore()  # the product's wait: botocore's db_instance_available waiter
    waited = time.monotonic() - started

    assert (down["status_after_reboot_call"], rebooting) == ("rebooting", "rebooting")
    assert streaming_meanwhile is False
    assert back["status"] == "available" and postgres.replica_streaming(sandbox)
    # It came back on its own after the reboot's downtime, not at once.
    assert aws_endpoint.DEFAULT_REBOOT_SECONDS - 5 < waited < 120


def test_rebooting_a_primary_leaves_the_local_servers_alone(sandbox):
    rds = aws.client(sandbox, "rds")
    primary = aws.names().db_instance_identifier
    status = rds.reboot_db_instance(DBInstanceIdentifier=primary)["DBInstance"]["DBInstanceStatus"]
    assert status == "available" and postgres.replica_streaming(sandbox) and postgres.healthy(sandbox)
