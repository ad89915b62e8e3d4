"""The run report is assembled from the DAG's tasks: where a run stopped, why, who approved or
rejected, whether anything changed; and no secret reaches it."""

from __future__ import annotations

from types import SimpleNamespace

from bisman_ops.change.report import Section, TaskView, assemble, in_run_order, phase_reached

APPROVED = {"subject": "Apply the Terraform plan?", "chosen": "Approve", "approved": True,
            "responded_by_user": {"id": "ops1", "name": "Ops One"}, "responded_at": "2026-01-01T10:00:00Z",
            "timed_out": False}


def view(task_id: str, state: str, **record) -> TaskView:
    return TaskView(task_id=task_id, state=state, duration=1.5, record=record)


def build(tasks: list[TaskView]):
    return assemble(title="BISMAN ERP rollout to staging", reason="roll out x", dag_id="bisman_rollout",
                    run_id="r1", params={"environment": "staging"}, tasks=tasks)


def summary(report) -> dict:
    return next(s for s in report.to_dict()["sections"] if s["title"] == "Summary")["values"]


def test_a_failure_after_a_change_is_failed_naming_the_step_the_message_and_the_phase_reached():
    report = build([
        view("preflight.preflight_gate", "success", measured={"passed": True}),
        view("core_infrastructure.approve_plan", "success", answer=APPROVED),
        view("core_infrastructure.terraform_apply", "failed", changed=True,
             failure={"message": "terraform apply: seen boom; expected success", "measured": {"x": 1}}),
        view("core_infrastructure.core_infrastructure_gate", "upstream_failed"),
    ])
    assert report.outcome == "failed"
    values = summary(report)
    assert values["phase reached"] == "preflight"
    assert values["stopped at"] == "core_infrastructure.terraform_apply"
    assert "boom" in values["stopped because"] and values["measured when it stopped"] == {"x": 1}
    [row] = next(s for s in report.to_dict()["sections"] if s["title"] == "Approvals")["tables"][0]["rows"]
    assert row[2:4] == ["Approve", "Ops One"]


def test_a_failure_before_any_change_is_refused():
    report = build([
        view("preflight.state_backend_ready", "success", changed=False),
        view("preflight.acquire_change_lock", "failed", failure={"message": "held by other/run"}),
        view("preflight.preflight_gate", "upstream_failed"),
    ])
    assert report.outcome == "refused"
    assert "before any change" in report.summary and "other/run" in report.summary


def test_a_rejected_approval_is_the_outcome_with_who_rejected_it():
    rejected = {**APPROVED, "chosen": "Reject", "approved": False}
    report = build([
        view("preflight.preflight_gate", "success"),
        view("core_infrastructure.approve_plan", "failed", answer=rejected),
        view("core_infrastructure.terraform_apply", "upstream_failed"),
    ])
    assert report.outcome == "rejected"
    assert summary(report)["stopped because"] == "Reject by Ops One"


def test_an_approval_that_timed_out_is_rejected_by_nobody():
    timed_out = {**APPROVED, "chosen": "Reject", "approved": False, "responded_by_user": None,
                 "timed_out": True}
    report = build([view("approve_traffic_switch", "failed", answer=timed_out)])
    assert report.outcome == "rejected"
    assert "nobody (timed out" in summary(report)["stopped because"]


def test_steps_sections_and_hints_reach_the_report_and_a_clean_run_succeeds():
    plan = Section("Terraform plan").add("summary", "1 to add")
    report = build([view("validate_request", "success", sections=[plan.as_dict()]),
                    view("restore_snapshot", "skipped")])
    assert report.outcome == "success"
    assert next(s for s in report.to_dict()["sections"] if s["title"] == "Terraform plan")["values"] == {
        "summary": "1 to add"}
    assert build([view("validate_request", "success", hint="no_change")]).outcome == "no_change"


def test_unbuilt_phase_is_reported_and_secrets_never_appear():
    report = build([
        view("preflight.preflight_gate", "success", measured={"note": "key sk_live_abcdefghijkl"}),
        view("core_infrastructure.core_infrastructure_gate", "success", changed=True,
             measured={"dsn": "postgresql://app:s3cretpass@db/x"}),
        view("usage_metering.usage_metering_gate", "failed",
             failure={"message": "usage_metering_gate: seen not built yet; expected a built phase"}),
    ])
    markdown, as_json = report.to_markdown(), report.to_json()
    assert "not built yet" in markdown and summary(report)["phase reached"] == "core_infrastructure"
    for text in (markdown, as_json):
        assert "sk_live_abcdefghijkl" not in text and "s3cretpass" not in text


def test_phase_reached_is_none_without_groups_and_teardowns_do_not_count():
    assert phase_reached([view("validate_request", "success")]) is None
    tasks = [view("preflight.a", "success"), TaskView("read_replica.restored", "failed", is_teardown=True)]
    assert phase_reached(tasks) == "preflight"


def test_run_order_puts_upstream_first_whatever_the_declaration_order():
    def task(task_id, *upstream):
        return SimpleNamespace(task_id=task_id, upstream_task_ids=set(upstream))

    ordered = in_run_order([task("outputs", "plan"), task("init"), task("plan", "init")])
    assert [t.task_id for t in ordered] == ["init", "plan", "outputs"]
