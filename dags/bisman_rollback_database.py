"""
### Roll back the database (RDS snapshot restore)

Runbook: restore the application database from a snapshot into a **new** instance; the original is
never deleted or renamed.

1. Fill the form: environment, the instance, `snapshot_identifier` (`latest` or an id), the target
   identifier (empty: derived, never the live name), whether to switch traffic, the reason.
2. Type the instance identifier in **confirm**.
3. The DAG checks the snapshot (exists, available, this instance's) and says how much data the
   restore loses, snapshots the current instance first, restores, waits, verifies the tables, and
   — only if asked and approved — points the application at the restored instance.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param, chain

from bisman_ops import params
from bisman_ops.dag_defaults import CHANGE_ARGS, START_DATE, not_built

DAG_ID = "bisman_rollback_database"
ISSUE = "issue: manual rollback DAGs"

with DAG(
    dag_id=DAG_ID,
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=CHANGE_ARGS,
    tags=["bisman", "rollback"],
    doc_md=__doc__,
    params={
        "environment": params.environment(),
        "db_instance_identifier": params.identifier("DB instance", "Empty: the environment's primary."),
        "snapshot_identifier": Param("latest", type="string", pattern=params.SNAPSHOT_PATTERN,
                                     title="Snapshot", description="`latest` or a snapshot identifier."),
        "target_instance_identifier": params.identifier(
            "Restore into", "Empty: derived from the instance and the run; never the live instance."),
        "switch_traffic": Param(False, type="boolean", title="Switch traffic",
                                description="Point the application at the restored instance (asks "
                                            "for approval first)."),
        "reason": params.reason(),
        "confirm": params.confirm("the DB instance identifier"),
    },
) as dag:
    chain(not_built("validate_request", ISSUE), not_built("restore_snapshot", ISSUE))
