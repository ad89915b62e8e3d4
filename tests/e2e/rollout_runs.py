"""What the rollout e2e tests share: the form as an operator fills it, waits on a run and its
approval, and reads of its report and the change lock, all through the REST API and the sandbox."""

from __future__ import annotations

import json
import uuid

from bisman_ops import change_lock
from bisman_ops.naming import ResourceNames
from bisman_sandbox import aws as sandbox_aws
from bisman_sandbox.process import wait_until
from bisman_sandbox.rollout_conf import rollout_conf
from tests.e2e import approvals

DAG_ID = "bisman_rollout"
APPROVE = "core_infrastructure.approve_plan"
OFFER = "choose_rollback"  # a run failed after its apply offers the rollbacks
PHASES = ("preflight", "core_infrastructure", "read_replica", "usage_metering", "billing", "scheduled_jobs",
          "monitoring", "chaos", "post_deploy")
NAMES = ResourceNames("bisman-erp", "staging")
RUN_TIMEOUT = 1800  # the whole rehearsal on a loaded 2-core machine


def form(sandbox, **overrides) -> dict:
    """The form as an operator fills it, with a fresh image tag so the plan always has changes."""
    conf = rollout_conf(sandbox)
    conf["app_image"] = f"bisman-erp:e2e-{uuid.uuid4().hex[:8]}"
    conf.update(overrides)
    return conf


def states(af, run_id: str) -> dict[str, str]:
    return {t["task_id"]: t["state"] for t in af.task_instances(DAG_ID, run_id)}


def finished(af, run_id: str) -> str:
    """The run's end state. A run that failed after its apply asks whether to roll back: answered
    Stop here, unless the test answered it already."""
    def ended_or_asking() -> bool:
        if af.run(DAG_ID, run_id)["state"] in ("success", "failed"):
            return True
        return approvals.task_instance(af, DAG_ID, run_id, OFFER)["state"] == "awaiting_input"

    wait_until(ended_or_asking, timeout=RUN_TIMEOUT, what=f"{DAG_ID} run {run_id} to end", interval=2)
    if af.run(DAG_ID, run_id)["state"] not in ("success", "failed"):
        approvals.answer(af, DAG_ID, run_id, OFFER, "Stop")
    state = af.wait_for_run(DAG_ID, run_id, timeout=RUN_TIMEOUT)
    # The teardowns (lock release, report) may still be finishing when the run's state is set.
    af.wait_for_task_state(DAG_ID, run_id, "write_run_report", ("success", "failed", "skipped"), timeout=120)
    return state


def approve(af, run_id: str, option: str = "Approve") -> dict:
    """Answer the plan approval as in the UI; returns what it asked."""
    return approvals.answer(af, DAG_ID, run_id, APPROVE, option)


def run_count(af) -> int:
    return af._call("GET", f"/dags/{DAG_ID}/dagRuns?limit=1")["total_entries"]


def report(sandbox, run_id: str, names: ResourceNames = NAMES) -> tuple[dict, str]:
    s3 = sandbox_aws.client(sandbox, "s3")
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in run_id)
    base = f"{names.reports_prefix}/{DAG_ID}/{safe}"
    body = s3.get_object(Bucket=names.state_bucket, Key=f"{base}.json")["Body"].read().decode()
    markdown = s3.get_object(Bucket=names.state_bucket, Key=f"{base}.md")["Body"].read().decode()
    return json.loads(body), markdown


def lock_holder(sandbox):
    return change_lock.current(sandbox_aws.client(sandbox, "dynamodb"), NAMES.lock_table, "staging")


def summary(rep: dict) -> dict:
    return next(s for s in rep["sections"] if s["title"] == "Summary")["values"]


def plan_objects(sandbox, run_id: str) -> list[str]:
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in run_id)
    listed = sandbox_aws.client(sandbox, "s3").list_objects_v2(Bucket=NAMES.state_bucket,
                                                               Prefix=f"plans/staging/{safe}/")
    return [o["Key"] for o in listed.get("Contents", [])]


def failure_of(af, run_id: str, task_id: str) -> dict:
    """The failure a step recorded for the report."""
    entry = af._call("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/"
                            "change_record?deserialize=true")
    value = entry["value"]
    return (json.loads(value) if isinstance(value, str) else value)["failure"]


def steps(rep: dict) -> dict[str, dict]:
    """Each step's measurement in the report, by task id."""
    return {r[0]: r[2] for r in next(s for s in rep["sections"]
                                     if s["title"] == "Checks and gate measurements")["tables"][0]["rows"]}
