"""Moved to ``bisman_ops.change.report``; this name stays until every caller imports from there."""

from bisman_ops.change.report import (  # noqa: F401
    OUTCOMES,
    REDACTED,
    RunReport,
    Section,
    Table,
    is_sensitive_key,
    redact,
    redact_text,
    report_keys,
    write_report,
)
