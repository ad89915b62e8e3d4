"""Phase 3 in the rollout DAG: its tasks run the phase module's functions with the Terraform outputs
and the form's load test as XComArgs, each check stands before everything after it (a failed check
leaves the gate and every later phase unrun), the test tenants have their teardown, and the form
carries the load test's params with the checklist's prod defaults and the sandbox's short rehearsal."""

from __future__ import annotations

import copy
import runpy
from pathlib import Path

import pytest

from bisman_ops.rollout import usage_metering as usage

DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "bisman_rollout.py"
GROUP = "usage_metering"
CHECKS = ("meter_settings_enabled", "migrations_succeeded", "usage_tables_match_contract",
          "load_test_within_thresholds", "metering_exact", "quota_enforced")
# Trigger rules under which a failed (or upstream-failed) task upstream stops a task from running.
PROPAGATES_FAILURE = ("all_success", "none_failed", "none_failed_min_one_success")


@pytest.fixture(scope="module")
def dag():
    return runpy.run_path(str(DAG_FILE))["dag"]


def validate(dag, conf: dict) -> dict:
    from airflow.sdk.definitions.param import ParamsDict

    # A deep copy: ParamsDict(dag.params) shares the Param objects, and update() would then change
    # the module's DAG's defaults for every later test.
    params = ParamsDict(copy.deepcopy(dag.params))
    params.update(conf)
    return params.validate()


def task(dag, name):
    return dag.task_dict[f"{GROUP}.{name}"]


def test_the_phase_runs_after_the_read_replica_gate_and_feeds_on_the_terraform_outputs(dag):
    assert "read_replica.read_replica_gate" in task(dag, "usage_params_valid").upstream_task_ids
    for name in ("meter_settings_enabled", "migrations_task_started", "migrations_succeeded",
                 "load_test_within_thresholds", "quota_enforced"):
        assert "core_infrastructure.terraform_outputs_checked" in task(dag, name).upstream_task_ids, name
    assert f"{GROUP}.usage_params_valid" in task(dag, "load_test_within_thresholds").upstream_task_ids
    assert f"{GROUP}.migrations_task_started" in task(dag, "migrations_succeeded").upstream_task_ids


@pytest.mark.parametrize("check", CHECKS)
def test_a_failed_check_leaves_the_gate_and_every_later_phase_unrun(dag, check):
    after = {t.task_id for t in task(dag, check).get_flat_relatives(upstream=False)}
    assert f"{GROUP}.usage_metering_gate" in after
    later = [t.task_id for t in dag.tasks if t.task_id.split(".")[0] in ("billing", "scheduled_jobs")]
    assert later and set(later) <= after
    # Nothing downstream runs past a failure by its trigger rule: only the teardowns do, and the
    # rollback offer once the lock is released (it asks a person, and changes nothing itself).
    offer = {t.task_id for t in dag.task_dict["release_change_lock"].get_flat_relatives(upstream=False)}
    assert "choose_rollback" in offer
    for t in (dag.task_dict[i] for i in after - offer):
        assert t.trigger_rule in PROPAGATES_FAILURE or t.is_teardown, t.task_id


def test_the_test_tenants_are_removed_by_a_teardown_after_the_checks_that_use_them(dag):
    removed = task(dag, "test_tenants_removed")
    assert removed.is_teardown
    assert {f"{GROUP}.test_tenants_planned", f"{GROUP}.test_tenants_created"} <= removed.upstream_task_ids
    assert task(dag, "test_tenants_planned").is_setup and not task(dag, "test_tenants_created").is_setup
    for name in ("load_test_within_thresholds", "metering_exact", "quota_enforced"):
        assert removed.task_id in {t.task_id for t in task(dag, name).get_flat_relatives(upstream=False)}
    # The gate hangs on the checks themselves, so a passing teardown cannot hide a failed check.
    gate_upstream = task(dag, "usage_metering_gate").upstream_task_ids
    assert {f"{GROUP}.load_test_within_thresholds", f"{GROUP}.metering_exact",
            f"{GROUP}.quota_enforced"} <= gate_upstream


def test_the_waits_and_the_changes_are_declared_as_such(dag):
    assert task(dag, "migrations_succeeded").mode == "reschedule"  # no worker slot held between looks


def test_the_form_has_the_load_test_params_with_the_checklists_prod_defaults(dag):
    form = dag.params
    assert form["load_test_users"] == 100 and form["load_test_duration_seconds"] == 300
    for name in usage.PARAMS:
        schema = form.get_param(name).schema
        assert schema["type"] in ("integer", "number") and schema.get("title"), name


def test_the_sandbox_rehearses_a_short_load_test_that_the_form_accepts(dag):
    from bisman_sandbox.context import SandboxContext
    from bisman_sandbox.rollout_conf import rollout_conf

    conf = rollout_conf(SandboxContext.from_env())
    assert conf["load_test_users"] * conf["load_test_duration_seconds"] < 100 * 300
    validate(dag, conf)  # raises on a value the form refuses
    shape = usage.load_shape(conf)
    assert (shape.users, shape.duration_s) == (conf["load_test_users"], conf["load_test_duration_seconds"])


def test_a_value_the_form_refuses_is_refused_before_the_run(dag):
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError, match="load_test_users"):
        validate(dag, {"load_test_users": 0})
