"""The session's rollout fixtures (registered by tests/conftest.py for the e2e and browser tiers):
whole DAG runs under the session's Airflow (the `sandbox` and `airflow` fixtures), triggered and
answered through the REST API as the UI does.

The approved rehearsal is the expensive part (every phase, about nine minutes), so one run serves
every test that reads what a good rollout did, the browser tier's included: it is triggered from the
DAG's form, its plan approved with a click on *Required actions* and its grid watched phase by phase
in Chromium, as an operator does. On the way, the process of every damaging step is killed once
right after its damage (``tests/e2e/restores.py``): its restore runs, the environment is back, and
the operator's clear of the killed step resumes the run, which still ends green.
Each failure path gets a run of its own."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bisman_sandbox import sinks
from tests import browser as ui
from tests.e2e import restores
from tests.e2e import rollout_runs as rr
from tests.e2e.leftovers import fail_left_over_runs


@pytest.fixture(scope="session")
def rollout(airflow, sandbox):
    """The session's Airflow with ``bisman_rollout`` parsed and unpaused, no run of an earlier
    session in the way (one run at a time: a run left waiting for an answer would queue every new one)."""
    airflow.wait_for_dag(rr.DAG_ID, timeout=900)  # all DAG files parsed first, on a busy machine
    assert airflow.import_errors() == []
    fail_left_over_runs(airflow, sandbox, rr.DAG_ID)
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
    # What the operator saw in the browser: each phase's gate as it ended, and the screenshots.
    grid: dict[str, str]
    screenshots: list[Path]
    # Each damaging step killed after its damage: its restore, and what showed the environment back.
    survived: list[dict]


@pytest.fixture(scope="session")
def rehearsal(rollout, sandbox, browser) -> Rehearsal:
    """One approved rollout with the operator's form (a fresh image tag, so the plan has changes),
    approved and watched in the browser."""
    sinks.clear(sandbox)
    conf = rr.form(sandbox)
    for old in ui.SCREENSHOTS.glob("rehearsal-*.png"):  # an earlier session's
        old.unlink()
    operator = ui.log_in(browser, "rehearsal")
    try:
        # Triggered from the DAG's form with the sandbox's configuration pasted in, as an operator
        # would from the UI (scripts/run.sh triggers through the REST API); found by the form's run id.
        run_id = f"rehearsal__{datetime.now(UTC):%Y%m%dT%H%M%S}"
        before = restores.before_the_damage(sandbox)
        restores.arm(sandbox, rr.DAG_ID, run_id, restores.rollout_kills())
        operator.trigger_with_configuration(rr.DAG_ID, conf, run_id)
        triggered = rollout.run(rr.DAG_ID, run_id)
        assert {key: triggered["conf"].get(key) for key in conf} == conf, triggered["conf"]
        approval = ui.approve_with_a_click(operator, rollout, rr.DAG_ID, run_id, rr.APPROVE,
                                           re.compile(r"Apply the Terraform plan to staging\?"))

        second = rollout.trigger(rr.DAG_ID, rr.form(sandbox))
        rollout.wait_for_task_state(rr.DAG_ID, run_id, "core_infrastructure.terraform_apply", ("success",),
                                    timeout=600)
        second_state = rollout.run(rr.DAG_ID, second)["state"]
        second_states = rr.states(rollout, second)
        rollout._call("PATCH", f"/dags/{rr.DAG_ID}/dagRuns/{second}", json={"state": "failed"})

        grid, survived = {}, []
        for phase in rr.PHASES[1:]:
            for kills in restores.ROLLOUT_ROUNDS.get(phase, []):
                survived += restores.survive_round(rollout, sandbox, rr.DAG_ID, run_id, kills, before,
                                                   timeout=rr.RUN_TIMEOUT, asking=rr.OFFER,
                                                   phases=rr.PHASES)
            grid |= ui.watch_the_grid(operator, rollout, rr.DAG_ID, run_id, {phase: f"{phase}.{phase}_gate"},
                                      timeout=rr.RUN_TIMEOUT)
        state = rr.finished(rollout, run_id)
        operator.open(f"/dags/{rr.DAG_ID}/runs/{run_id}")
        operator.page.get_by_text(re.compile(rf"^{state}$", re.I)).first.wait_for()
        operator.shot("run-ended")
    finally:
        operator.close()
    rep, markdown = rr.report(sandbox, run_id)
    # Where the run stopped the team is told; wait for both before the captures are kept.
    where = rr.summary(rep).get("stopped at")
    if where:
        sinks.wait_for_mail(sandbox, lambda m: where in m["subject"])
        sinks.wait_for_slack(sandbox, lambda p: where in json.dumps(p))
    return Rehearsal(run_id, conf, state, rr.states(rollout, run_id), rep, markdown, approval,
                     sinks.captured_mail(sandbox), sinks.captured_slack(sandbox), rr.lock_holder(sandbox),
                     second_state, second_states, grid, sorted(ui.SCREENSHOTS.glob("rehearsal-*.png")),
                     survived)
