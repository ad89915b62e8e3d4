"""The sandbox's ``ReplicaControl`` for the rollout's replica-failure drill.

moto's RDS reboot changes nothing a client can see, so the drill also stops the local PostgreSQL
replica for real (which is what makes reads fall back) and starts it again on restore. The
launcher registers it for Airflow: ``BISMAN_IMPL_REPLICA_CONTROL`` = ``IMPLEMENTATION`` below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bisman_ops.rollout.read_replica import RdsRebootControl

IMPLEMENTATION = f"{__name__}:SandboxReplicaControl"


@dataclass
class SandboxReplicaControl(RdsRebootControl):
    """The RDS reboot in moto, plus stopping the local PostgreSQL replica."""

    name: str = "sandbox"

    def take_down(self) -> dict[str, Any]:
        from bisman_sandbox import postgres
        from bisman_sandbox.context import SandboxContext

        done = super().take_down()
        postgres.stop_replica(SandboxContext.from_env())
        return {**done, "control": self.name, "local_replica": "stopped"}

    def restore(self) -> dict[str, Any]:
        from bisman_sandbox import postgres
        from bisman_sandbox.context import SandboxContext

        postgres.start_replica(SandboxContext.from_env())  # returns once it streams again
        done = super().restore()
        return {**done, "control": self.name, "local_replica": "streaming"}
