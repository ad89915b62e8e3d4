"""End-to-end tests: whole DAG runs under the session's Airflow (the `sandbox` and `airflow` fixtures
of tests/conftest.py), triggered and answered through the REST API as the UI does.

The approved rehearsal is the expensive part (every built phase, about five minutes), so one run
serves every test that reads what a good rollout did; each failure path gets a run of its own."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from bisman_sandbox import sinks
from tests.e2e import rollout_runs as rr


@pytest.fixture(scope="session")
def rollout(airflow):
    """The session's Airflow with ``bisman_rollout`` parsed and unpaused."""
    airflow.wait_for_dag(rr.DAG_ID, timeout=900)  # all DAG files parsed first, on a busy machine
    assert airflow.import_errors() == []
    airflow.unpause(rr.DAG_ID)
    return airflow


@dataclass(frozen=True)
class Rehearsal:
    run_id: str
    conf: dict
    state: str
    states: dict[str, str]
    report: dict
    markdown: str
    approval: dict  # what the plan approval asked
    mail: list[dict]  # the sinks' captures when the run had ended (later tests clear them)
    slack: list[dict]
    lock: object  # the change lock's holder once the run had ended (None: released)
    # A second rollout triggered while the first was being applied, seen before it was failed by hand.
    second_state: str
    second_states: dict[str, str]


@pytest.fixture(scope="session")
def rehearsal(rollout, sandbox) -> Rehearsal:
    """One approved rollout with the operator's form (a fresh image tag, so the plan has changes)."""
    sinks.clear(sandbox)
    conf = rr.form(sandbox)
    run_id = rollout.trigger(rr.DAG_ID, conf)
    approval = rr.approve(rollout, run_id)

    second = rollout.trigger(rr.DAG_ID, rr.form(sandbox))
    rollout.wait_for_task_state(rr.DAG_ID, run_id, "core_infrastructure.terraform_apply", ("success",),
                                timeout=600)
    second_state = rollout.run(rr.DAG_ID, second)["state"]
    second_states = rr.states(rollout, second)
    rollout._call("PATCH", f"/dags/{rr.DAG_ID}/dagRuns/{second}", json={"state": "failed"})

    state = rr.finished(rollout, run_id)
    rep, markdown = rr.report(sandbox, run_id)
    # Where the run stopped the team is told; wait for both before the captures are kept.
    where = rr.summary(rep).get("stopped at")
    if where:
        sinks.wait_for_mail(sandbox, lambda m: where in m["subject"])
        sinks.wait_for_slack(sandbox, lambda p: where in json.dumps(p))
    return Rehearsal(run_id, conf, state, rr.states(rollout, run_id), rep, markdown, approval,
                     sinks.captured_mail(sandbox), sinks.captured_slack(sandbox), rr.lock_holder(sandbox),
                     second_state, second_states)
