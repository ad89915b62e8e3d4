"""Phase 7 in the rollout DAG: the drills run one at a time; a drill that fails is still restored
by its teardown, and leaves the later drills, the gate and post-deploy unrun; a drill whose steady
state never held injects nothing; off, every drill is skipped and the gate still passes; staging
skips only the approval, a rejected prod approval runs no drill."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from bisman_ops.rollout.chaos import DRILLS
from tests.rollout.dag_shape import unrun

DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "bisman_rollout.py"
GATE = "chaos.chaos_gate"


@pytest.fixture(scope="module")
def dag():
    return runpy.run_path(str(DAG_FILE))["dag"]


def t(drill, name):
    return f"chaos.{drill}.{name}"


def downstream_of(dag, task_id):
    return tuple(dag.task_dict[task_id].downstream_task_ids)


@pytest.mark.parametrize("drill", DRILLS)
def test_each_drill_is_a_fault_with_its_restore_as_teardown_and_its_hypothesis_on_both_sides(dag, drill):
    restore = dag.task_dict[t(drill, "fault_restored")]
    assert restore.is_teardown and dag.task_dict[t(drill, "fault_intended")].is_setup
    assert {t(drill, "fault_intended"), t(drill, "fault_injected"), t(drill, "fault_coped_with")} <= (
        restore.upstream_task_ids)
    after = dag.task_dict[t(drill, "steady_state_after")]
    assert {t(drill, "fault_coped_with"), t(drill, "fault_restored")} <= after.upstream_task_ids
    assert t(drill, "fault_intended") in dag.task_dict[t(drill, "fault_injected")].upstream_task_ids
    assert t(drill, "steady_state_before") in dag.task_dict[t(drill, "fault_intended")].upstream_task_ids


@pytest.mark.parametrize("drill", DRILLS)
def test_a_failed_drill_is_restored_and_stops_the_later_drills_the_gate_and_post_deploy(dag, drill):
    states = unrun(dag, failed=(t(drill, "fault_coped_with"),))
    assert t(drill, "fault_restored") not in states  # the restore runs
    assert "release_change_lock" not in states and "write_run_report" not in states
    assert states[t(drill, "steady_state_after")] == "upstream_failed"
    later = DRILLS[DRILLS.index(drill) + 1:]
    for other in later:
        assert states[t(other, "fault_injected")] == "upstream_failed", other
        assert states[t(other, "fault_restored")] == "upstream_failed", other  # no intent: nothing to restore
    assert states[GATE] == "upstream_failed"
    assert states["post_deploy.post_deploy_gate"] == "upstream_failed"


def test_a_steady_state_that_never_holds_injects_nothing(dag):
    states = unrun(dag, failed=(t("redis_failover", "steady_state_before"),))
    assert states[t("redis_failover", "fault_injected")] == "upstream_failed"
    assert states[t("redis_failover", "fault_restored")] == "upstream_failed"  # its intent never ran


def test_drills_off_skip_every_drill_and_the_gate_still_passes(dag):
    states = unrun(dag, skipped=downstream_of(dag, "chaos.drills_enabled"))
    for drill in DRILLS:
        assert states[t(drill, "fault_injected")] == "skipped", drill
        assert states[t(drill, "fault_restored")] == "skipped", drill
    assert GATE not in states and "post_deploy.post_deploy_gate" not in states


def test_staging_skips_only_the_approval_and_a_rejected_prod_approval_runs_no_drill(dag):
    staging = unrun(dag, skipped=downstream_of(dag, "chaos.drills_approval_needed"))
    assert staging["chaos.approve_drills"] == "skipped"
    assert "chaos.drills_approved" not in staging
    assert all(t(d, "fault_injected") not in staging for d in DRILLS)
    rejected = unrun(dag, failed=("chaos.approve_drills",))
    assert all(rejected[t(d, "fault_injected")] == "upstream_failed" for d in DRILLS)
    assert rejected[GATE] == "upstream_failed"
