"""The sandbox's AWS endpoint: moto's server, extended in its own process so that the calls the
product makes have the effect AWS would have on the sandbox's local services, in AWS's order of
states. The product calls it through its AWS implementations, as it calls AWS.

- ``RebootDBInstance`` of a read replica (the sandbox's replicas are its local PostgreSQL replica):
  the instance is ``rebooting`` and the local replica stopped when the call answers; after
  ``REBOOT_SECONDS`` (``BISMAN_SANDBOX_RDS_REBOOT_SECONDS``, 15 s by default; RDS takes a minute
  or two) the replica is started again and, once it streams, ``available``.

Run as ``python -m bisman_sandbox.aws_endpoint -H host -p port`` (moto server's arguments), with
the sandbox's location in the environment (``BISMAN_SANDBOX_DIR``, ``BISMAN_SANDBOX_PORT_*``).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any

log = logging.getLogger(__name__)

REBOOT_SECONDS_ENV = "BISMAN_SANDBOX_RDS_REBOOT_SECONDS"
DEFAULT_REBOOT_SECONDS = 15.0


def reboot_seconds(environ: dict | None = None) -> float:
    raw = (os.environ if environ is None else environ).get(REBOOT_SECONDS_ENV, "")
    return float(raw) if raw else DEFAULT_REBOOT_SECONDS


def _replica_comes_back(database: Any, downtime: float) -> None:
    from bisman_sandbox import postgres
    from bisman_sandbox.context import SandboxContext

    time.sleep(downtime)
    try:
        postgres.start_replica(SandboxContext.from_env())  # returns once it streams again
    except Exception:  # stays "rebooting": the waiter of whoever rebooted it times out, naming it
        log.exception("the local replica did not come back after the reboot of %s",
                      database.db_instance_identifier)
        return
    database.status = "available"


def _rebooted(database: Any) -> Any:
    """What a reboot does: the local replica down now, back after the reboot's downtime."""
    from bisman_sandbox import postgres
    from bisman_sandbox.context import SandboxContext

    if not database.read_replica_source_db_instance_identifier:
        return database  # a primary: the sandbox's primary serves every environment; left alone
    database.status = "rebooting"
    postgres.stop_replica(SandboxContext.from_env())
    threading.Thread(target=_replica_comes_back, args=(database, reboot_seconds()),
                     name=f"reboot-{database.db_instance_identifier}", daemon=True).start()
    return database


def install() -> None:
    """Give moto's backends the effects listed in the module docstring (once per process)."""
    from moto.rds import models as rds

    if getattr(rds.RDSBackend.reboot_db_instance, "bisman_effect", False):
        return
    plain = rds.RDSBackend.reboot_db_instance

    def reboot_db_instance(self: Any, db_instance_identifier: str, *args: Any, **kwargs: Any) -> Any:
        return _rebooted(plain(self, db_instance_identifier, *args, **kwargs))

    reboot_db_instance.bisman_effect = True  # type: ignore[attr-defined]
    rds.RDSBackend.reboot_db_instance = reboot_db_instance


def main(argv: list[str] | None = None) -> None:
    from moto import server

    install()
    server.main(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
