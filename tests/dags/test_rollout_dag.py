"""The rollout DAG declares, it does not dispatch: every task's callable is a function of a phase
module (or the change layer) that an IDE can jump to, the plan feeds the approval and the apply,
the Terraform outputs feed the later checks, and the waits are reschedule-mode sensors."""

from __future__ import annotations

import importlib
import inspect
import runpy
from pathlib import Path

import pytest

DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "bisman_rollout.py"

@pytest.fixture(scope="module")
def dag():
    return runpy.run_path(str(DAG_FILE))["dag"]


def test_every_task_runs_a_module_level_function_of_the_product(dag):
    for task in dag.tasks:
        callable_ = getattr(task, "python_callable", None)
        if callable_ is None:
            continue
        fn = inspect.unwrap(callable_)
        assert fn.__module__.startswith("bisman_ops."), f"{task.task_id}: {fn.__module__}"
        declared = getattr(importlib.import_module(fn.__module__), fn.__name__)
        assert inspect.unwrap(declared.function) is fn, f"{task.task_id} is not {fn.__module__}.{fn.__name__}"


def test_the_plan_feeds_the_approval_and_the_apply_and_the_outputs_feed_the_checks(dag):
    t = dag.task_dict
    plan = "core_infrastructure.terraform_plan"
    assert plan in t["core_infrastructure.approve_plan"].upstream_task_ids
    apply_upstream = t["core_infrastructure.terraform_apply"].upstream_task_ids
    assert {plan, "core_infrastructure.approve_plan"} <= apply_upstream
    outputs = "core_infrastructure.terraform_outputs_checked"
    for check in ("core_infrastructure.pgbouncer_connected_to_primary", "read_replica.replica_taken_down",
                  "read_replica.replica_lag_below_threshold", "read_replica.reads_fall_back_to_primary"):
        assert outputs in t[check].upstream_task_ids, check


def test_waits_are_reschedule_sensors_and_the_approval_times_out_before_the_lease(dag):
    from bisman_ops.change import lock
    from bisman_ops.change.approval import ChangeApproval

    sensors = [t for t in dag.tasks if t.__class__.__name__ == "DecoratedSensorOperator"]
    assert {t.task_id.split(".")[-1] for t in sensors} >= {
        "certificate_issued", "rds_primary_available", "replica_lag_below_threshold", "replica_back_in_sync"}
    assert all(t.mode == "reschedule" for t in sensors)
    approvals = [t for t in dag.tasks if isinstance(t, ChangeApproval)]
    assert "core_infrastructure.approve_plan" in {t.task_id for t in approvals}
    for approval in approvals:
        assert approval.response_timeout.total_seconds() < lock.DEFAULT_LEASE_SECONDS, approval.task_id
        assert approval.defaults == ["Reject"], approval.task_id


def test_the_lock_and_the_report_are_teardowns_and_the_drill_restore_tears_down_its_setup(dag):
    t = dag.task_dict
    assert t["release_change_lock"].is_teardown and t["write_run_report"].is_teardown
    assert t["read_replica.replica_restored"].is_teardown
    assert "read_replica.replica_taken_down" in t["read_replica.replica_restored"].upstream_task_ids
    assert "read_replica.replica_restored" in t["release_change_lock"].upstream_task_ids


def test_every_phase_undoes_what_it_changed_for_its_checks_before_the_lock_is_given_back(dag):
    """Each drill's restore, each test tenant's removal, each fault switched off: a teardown of its
    setup, and upstream of the lock's release (another change must not start on a half-restored
    environment)."""
    t = dag.task_dict
    undo = [task for task in dag.tasks if task.is_teardown and task.task_id not in
            ("release_change_lock", "write_run_report")]
    assert {u.task_id for u in undo} >= {
        "read_replica.replica_restored", "usage_metering.test_tenants_removed",
        "scheduled_jobs.smoke_tenants_removed", "monitoring.probe_tenant_removed",
        "monitoring.app_errors_stopped", *(f"chaos.{d}.fault_restored" for d in
                                           ("replica_failure", "redis_failover", "app_task_killed"))}
    for task in undo:
        assert any(t[u].is_setup for u in task.upstream_task_ids), task.task_id
        assert task.task_id in t["release_change_lock"].upstream_task_ids, task.task_id


def test_every_form_field_has_a_title_a_description_and_a_section_in_phase_order(dag):
    fields = {key: dag.params.get_param(key).dump() for key in dag.params}
    missing = [key for key, p in fields.items()
               if not (p["schema"].get("title") and p["description"] and p["schema"].get("section"))]
    assert missing == []
    sections = list(dict.fromkeys(p["schema"]["section"] for p in fields.values()))
    assert sections == ["Target", "Preflight and core infrastructure", "Read replica",
                        "Usage metering and quotas", "Billing (Stripe)", "Scheduled jobs",
                        "Monitoring", "Chaos drills", "Post-deploy"]
    # A section keeps its validation: the schema moved, not only the heading.
    assert fields["domain_name"]["schema"]["pattern"]
    assert fields["load_test_users"]["schema"]["maximum"] == 5000


def test_each_task_gets_its_own_copy_of_the_form_values_sharing_the_schemas(dag):
    """Airflow deep-copies the DAG's params into every task it builds; the rollout's form shares its
    schemas with the copies (they made most of a task process's parse time), not its values."""
    first, second = (dag.task_dict[t].params for t in ("preflight.rollout_params_valid",
                                                        "post_deploy.post_deploy_gate"))
    a, b = first.get_param("domain_name"), second.get_param("domain_name")
    assert a is not b and a.schema is b.schema
    assert a.resolve("api.prod.bisman.test") == "api.prod.bisman.test"
    assert b.value == dag.params.get_param("domain_name").value != "api.prod.bisman.test"
    with pytest.raises(Exception, match="does not match"):
        b.resolve("not a domain!")


def test_the_dag_serializes_with_its_form_as_the_dag_processor_stores_it(dag):
    from airflow.serialization.serialized_objects import DagSerialization

    restored = DagSerialization.from_dict(DagSerialization.to_dict(dag))
    domain = restored.params.get_param("domain_name").schema
    assert domain["section"] == "Target"
    assert domain["pattern"] == dag.params.get_param("domain_name").schema["pattern"]
    assert restored.params.get_param("load_test_users").schema["maximum"] == 5000


PHASES = ("preflight", "core_infrastructure", "read_replica", "usage_metering", "billing", "scheduled_jobs",
          "monitoring", "chaos", "post_deploy")
GATES = {p: f"{p}.{p}_gate" for p in PHASES}


def restores_and_damages(dag) -> list[tuple[str, list[str]]]:
    """Each phase's restore with the steps that do its damage: the tasks between its setup (the
    intent) and it."""
    t = dag.task_dict
    found = []
    for task in dag.tasks:
        if not task.is_teardown or task.task_id in ("release_change_lock", "write_run_report"):
            continue
        setups = [u for u in task.upstream_task_ids if t[u].is_setup]
        damages = [d for s in setups for d in t[s].downstream_task_ids
                   if d != task.task_id and d in task.upstream_task_ids]
        found.append((task.task_id, damages))
    return found


def test_every_restore_runs_when_the_step_that_did_its_damage_failed(dag):
    """Airflow runs a teardown only if one of its setups succeeded: the setup is the intent, never the
    damaging step, so a damaging step that failed (or whose worker was killed) after its damage is
    still undone, and its phase fails."""
    from tests.rollout.dag_shape import unrun

    pairs = restores_and_damages(dag)
    assert {d for _, damages in pairs for d in damages} == {
        "read_replica.replica_taken_down", "usage_metering.test_tenants_created",
        "scheduled_jobs.smoke_tenants_created", "monitoring.probe_tenant_created",
        "monitoring.app_errors_started",
        *(f"chaos.{d}.fault_injected" for d in ("replica_failure", "redis_failover", "app_task_killed"))}
    for restore, damages in pairs:
        assert damages, f"{restore} has no damaging step between its intent and it"
        for damage in damages:
            states = unrun(dag, failed=(damage,))
            assert restore not in states, f"{restore} does not run when {damage} fails"
            assert states[GATES[restore.split(".")[0]]] == "upstream_failed", damage
            assert dag.task_dict[damage].retries == 0, f"{damage} is retried before its restore runs"
            for setup in (u for u in dag.task_dict[restore].upstream_task_ids if dag.task_dict[u].is_setup):
                assert dag.task_dict[setup].task_type == "_PythonDecoratedOperator"
                assert setup.endswith(("_intended", "_planned")), f"{setup} is not an intent"


@pytest.mark.parametrize("phase", PHASES)
def test_a_failed_check_or_restore_of_each_phase_fails_its_gate(dag, phase):
    """Every task of a phase reaches its gate by a path that does not pass through a restore, and
    every restore reaches it: a restore that passes cannot hide a failed check, and the next phase
    starts from an environment put back."""
    from tests.rollout.dag_shape import unrun

    gate = GATES[phase]
    for task in dag.tasks:
        if not task.task_id.startswith(f"{phase}.") or task.task_id == gate:
            continue
        states = unrun(dag, failed=(task.task_id,))
        assert states.get(gate) == "upstream_failed", f"{task.task_id} failing leaves {gate} unfailed"
        later = PHASES[PHASES.index(phase) + 1:]
        for other in later:
            assert states.get(GATES[other]) == "upstream_failed", f"{task.task_id} failing runs {other}"


def test_the_dag_body_is_one_call_per_phase(dag):
    groups = [g for g in dag.task_group.children if g in PHASES]
    assert groups == list(PHASES)
    source = DAG_FILE.read_text()
    assert "TaskGroup" not in source and ".as_teardown(setups=first.lock)" in source
