"""The run report page (the plugin's tab of a DAG run): what it shows from the report JSON, that
it escapes and redacts, and that it reads the report a run wrote to S3."""

from __future__ import annotations

import uuid

from bisman_ops import report_page
from bisman_ops.change.report import Section, TaskView, assemble, write_report

RUN = "manual__2026-12-06T10:00:00+00:00"


def _report() -> dict:
    approval = {"subject": "Apply the Terraform plan to staging?", "chosen": "Approve", "approved": True,
                "responded_by_user": {"id": "1", "name": "alice"}, "responded_at": "2026-12-06T10:05:00"}
    tasks = [
        TaskView("preflight.preflight_gate", "success", 1.0, {"measured": {"passed": True}}),
        TaskView("core_infrastructure.approve_plan", "success", 60.0, {"answer": approval}),
        TaskView("core_infrastructure.terraform_apply", "success", 12.5,
                 {"measured": {"applied": True, "note": "<script>alert(1)</script>"}, "changed": True}),
        TaskView("read_replica.replica_lag_below_threshold", "failed", 30.0,
                 {"failure": {"message": "lag 5.0 s >= 1.0 s", "measured": {"lag_s": 5.0}},
                  "measured": None}),
        TaskView("read_replica.read_replica_gate", "upstream_failed", None, {}),
    ]
    rep = assemble(title="BISMAN ERP rollout to staging", reason="roll out erp:2", dag_id="bisman_rollout",
                   run_id=RUN, params={"environment": "staging", "stripe_key": "sk_test_abcdefghijkl"},
                   tasks=tasks)
    rep.sections.append(Section("Leaky", values={"db_password": "hunter22-not-shown"}))
    return rep.to_dict()


def test_the_page_shows_phases_gates_measurements_approvals_and_links_to_each_tasks_log():
    page = report_page.render(_report(), "http://airflow.example:8080/")
    assert "<h1>BISMAN ERP rollout to staging</h1>" in page
    assert '<span class="outcome failed">failed</span>' in page
    assert "<h2>read_replica" in page and "gate upstream_failed" in page
    assert "<h2>preflight" in page and "gate success" in page
    # Each step links to its task (and its log) in the UI, out of the tab's frame.
    link = ('href="http://airflow.example:8080/dags/bisman_rollout/runs/manual__2026-12-06T10%3A00%3A00%2B00%3A00'
            '/tasks/core_infrastructure.terraform_apply" target="_top"')
    assert link in page
    assert "alice" in page and "Apply the Terraform plan to staging?" in page  # who approved what
    assert "lag 5.0 s &gt;= 1.0 s" in page  # where it stopped and why


def test_the_page_escapes_what_it_shows_and_shows_no_secret():
    page = report_page.render(_report(), "http://airflow.example:8080")
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "sk_test_abcdefghijkl" not in page and "hunter22-not-shown" not in page
    assert report_page.phases([["begin_run_report", "success", {}], ["a.x", "success", {}],
                               ["b.y_gate", "failed", {}], ["a.z", "success", {}],
                               ["release_change_lock", "success", {}]]) == [
        ("a", [["a.x", "success", {}], ["a.z", "success", {}]]), ("b", [["b.y_gate", "failed", {}]]),
        ("run", [["begin_run_report", "success", {}], ["release_change_lock", "success", {}]])]


def test_the_report_a_run_wrote_is_read_back_and_a_missing_one_is_none(sandbox):
    from bisman_ops.change.report import RunReport
    from bisman_sandbox import aws

    names = aws.names()
    s3 = aws.client(sandbox, "s3")
    run_id = f"manual__test-{uuid.uuid4().hex[:8]}"
    report = RunReport("Test report", "bisman_rollout", run_id, environment="staging").finish("success")
    keys = write_report(s3, names.state_bucket, names.reports_prefix, report)
    try:
        loaded = report_page.load(s3, names.state_bucket, names.reports_prefix, "bisman_rollout", run_id)
        assert loaded["title"] == "Test report" and loaded["outcome"] == "success"
        assert report_page.load(s3, names.state_bucket, names.reports_prefix, "bisman_rollout",
                                run_id + "-none") is None
    finally:
        for key in keys:
            s3.delete_object(Bucket=names.state_bucket, Key=key)
