"""A run an earlier session left running or queued (same Airflow home) would queue every new run of
its DAG (one run at a time): it is failed, and the change lock it may hold released."""

from __future__ import annotations

from bisman_ops.change import lock as change_lock
from bisman_sandbox import aws as sandbox_aws


def fail_left_over_runs(af, sandbox, dag_id: str, environment: str = "staging") -> list[str]:
    """Fail ``dag_id``'s running and queued runs and release the lock each may hold; their ids."""
    ddb, table = sandbox_aws.client(sandbox, "dynamodb"), sandbox_aws.names(environment).lock_table
    failed = []
    for state in ("running", "queued"):
        for old in af._call("GET", f"/dags/{dag_id}/dagRuns?state={state}")["dag_runs"]:
            af._call("PATCH", f"/dags/{dag_id}/dagRuns/{old['dag_run_id']}", json={"state": "failed"})
            change_lock.release(ddb, table, environment, f"{dag_id}/{old['dag_run_id']}")
            failed.append(old["dag_run_id"])
    return failed
