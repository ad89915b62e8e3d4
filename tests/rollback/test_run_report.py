"""Run reports: secrets never reach them; JSON and Markdown land in S3."""

from __future__ import annotations

import json

from bisman_ops.run_report import RunReport, redact, write_report


def test_values_under_secret_keys_and_secret_looking_values_are_redacted():
    data = redact(
        {
            "DB_PASSWORD": "hunter2",
            "STRIPE_SECRET_KEY": "x",
            "api_token": "abc",
            "app_secrets_arn": "arn:x",
            "json_key": "reports/a.json",
            "note": "used sk_live_abcdef123456 and whsec_abcdefgh1",
            "url": "postgresql://bisman_app:pw-123@db:5432/bisman",
            "auth": "Bearer abcdefghijklmnop",
            "nested": [{"password": "p"}, "redis://:secretpw@cache:6379"],
        }
    )
    assert data["DB_PASSWORD"] == data["STRIPE_SECRET_KEY"] == data["api_token"] == "***"
    assert data["app_secrets_arn"] == "arn:x"
    assert data["json_key"] == "reports/a.json"
    assert "sk_live_" not in data["note"] and "whsec_" not in data["note"]
    assert data["url"] == "postgresql://bisman_app:***@db:5432/bisman"
    assert data["auth"] == "Bearer ***"
    assert data["nested"] == [{"password": "***"}, "redis://:***@cache:6379"]


def test_name_value_tables_hide_the_values_of_secret_names():
    report = RunReport("t", "d", "r")
    report.section("Env").table(
        "env",
        ["container", "variable", "current", "target"],
        [["app", "JWT_SECRET", "a", "b"], ["app", "LOG_LEVEL", "info", "debug"]],
    )
    md = report.to_markdown()
    assert "| app | JWT_SECRET | *** | *** |" in md
    assert "| app | LOG_LEVEL | info | debug |" in md


def test_report_round_trips_and_is_written_as_json_and_markdown(clients):
    s3 = clients["s3"]
    bucket = "bisman-erp-staging-terraform-state"
    report = RunReport(
        "Rollback",
        "bisman_rollback_database",
        "manual__2026-01-01T00:00:00+00:00",
        environment="staging",
        reason="INC-7 bad migration",
    )
    report.section("Plan").add("snapshot", "snap-1").add("DATABASE_URL", "postgresql://u:pw@h/db")
    report.timing("validate_request", 1.25)
    report.finish("success", summary="done")
    assert RunReport.from_dict(report.to_dict()).to_dict() == report.to_dict()
    json_key, md_key = write_report(s3, bucket, "reports/staging", report)
    assert json_key == "reports/staging/bisman_rollback_database/manual__2026-01-01T00_00_00_00_00.json"
    stored = json.loads(s3.get_object(Bucket=bucket, Key=json_key)["Body"].read())
    assert stored["outcome"] == "success" and stored["reason"] == "INC-7 bad migration"
    assert stored["sections"][0]["values"]["DATABASE_URL"] == "postgresql://u:***@h/db"
    md = s3.get_object(Bucket=bucket, Key=md_key)["Body"].read().decode()
    assert md.startswith("# Rollback") and "| validate_request | 1.2 |" in md and "pw" not in md


def test_checks_and_timings_of_secrets_stay_readable_while_the_secrets_do_not():
    report = RunReport("t", "d", "r")
    report.section("Secrets").add("jwt_secret_bits", 408).add("app_secrets_valid", True).add(
        "jwt_secret", "abcdefghijklmnopqrstuvwxyz0123456789"
    )
    report.timing("preflight.app_secrets_valid", 1.25)
    data = json.loads(report.to_json())
    values = data["sections"][0]["values"]
    assert values["jwt_secret_bits"] == 408
    assert values["app_secrets_valid"] is True
    assert values["jwt_secret"] == "***"
    assert data["timings"]["preflight.app_secrets_valid"] == 1.25
    assert "| preflight.app_secrets_valid | 1.2 |" in report.to_markdown().replace("\\_", "_")
