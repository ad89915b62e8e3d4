"""A run's report: what was asked, what was seen, what changed, how long each step took, and how it
ended, as JSON (for machines) and Markdown (for the operator and the incident record), written to S3.

Everything passes through ``redact`` on the way out: values under keys that name a secret
(password, secret, token, api key, ...) and values that look like one (Stripe keys, webhook
secrets, URLs with a password, bearer tokens, AWS access keys) never reach the report.
A report round-trips through ``to_dict``/``from_dict`` so tasks can pass it along by XCom.
"""

from __future__ import annotations

import json
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

REDACTED = "***"

OUTCOMES = ("running", "success", "failed", "refused", "no_change", "rejected")

_SENSITIVE_WORDS = {
    "password",
    "passwd",
    "pwd",
    "secret",
    "secrets",
    "token",
    "apikey",
    "credential",
    "credentials",
    "authorization",
    "cookie",
    "dsn",
}
# "key" alone is too common to redact everywhere: "s3_key", "json_key", "sort_key" are harmless.
_HARMLESS_BEFORE_KEY = {
    "s3",
    "object",
    "json",
    "md",
    "markdown",
    "report",
    "sort",
    "hash",
    "partition",
    "lock",
    "cache",
    "idempotency",
    "dedup",
    "primary",
    "foreign",
    "state",
}
# A key naming where a secret lives, not the secret: app_secrets_arn, secret_name.
# Nor one naming a check of a secret or a measure of it: app_secrets_valid, jwt_secret_bits.
_REFERENCE_WORDS = {"arn", "name", "id", "identifier", "count", "version", "expires", "rotated", "path",
                    "valid", "checked", "present", "bits", "length", "mode", "strength", "seconds"}

_VALUE_PATTERNS = [
    (re.compile(r"\b(sk|rk|pk)_(live|test)_[A-Za-z0-9]{6,}"), REDACTED),
    (re.compile(r"\bwhsec_[A-Za-z0-9+/=]{6,}"), REDACTED),
    (re.compile(r"\bAKIA[0-9A-Z]{16}\b"), REDACTED),
    # scheme://user:password@host -> scheme://user:***@host (postgres, redis, amqp, http, ...)
    (re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*):([^@\s/]+)@"), rf"\1:{REDACTED}@"),
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]{8,}"), rf"\1 {REDACTED}"),
    (re.compile(r"(?i)\b(password|passwd|pwd|secret|token)=([^\s&;]+)"), rf"\1={REDACTED}"),
]


def _words(key: str) -> list[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", key)
    return [w for w in re.split(r"[^a-zA-Z0-9]+", spaced.lower()) if w]


def is_sensitive_key(key: str) -> bool:
    words = _words(key)
    if words and words[-1] in _REFERENCE_WORDS:
        return False
    for i, word in enumerate(words):
        if word in _SENSITIVE_WORDS:
            return True
        if word == "key" and (i == 0 or words[i - 1] not in _HARMLESS_BEFORE_KEY):
            return True
        if word.endswith("password") or word.endswith("secret") or word.endswith("token"):
            return True
    return False


def redact_text(text: str) -> str:
    for pattern, replacement in _VALUE_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact(value: Any, key: str | None = None) -> Any:
    """``value`` with every secret replaced by ``***`` (recursively through dicts and lists)."""
    # A boolean or a number under a secret-sounding key is a check's outcome or a timing, not a
    # secret; strings and containers are redacted.
    if (key is not None and is_sensitive_key(key) and value not in (None, "", [], {})
            and not isinstance(value, bool | int | float)):
        return REDACTED
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)


@dataclass
class Section:
    title: str
    values: dict[str, Any] = field(default_factory=dict)
    tables: list[Table] = field(default_factory=list)

    def add(self, key: str, value: Any) -> Section:
        self.values[key] = value
        return self

    def table(self, title: str, columns: list[str], rows: list[list[Any]]) -> Table:
        t = Table(title, list(columns), [list(r) for r in rows])
        self.tables.append(t)
        return t


@dataclass
class RunReport:
    title: str
    dag_id: str
    run_id: str
    environment: str = ""
    reason: str = ""
    outcome: str = "running"
    summary: str = ""
    error: str | None = None
    started_at: str = field(default_factory=_now_iso)
    finished_at: str | None = None
    sections: list[Section] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def section(self, title: str) -> Section:
        """The section called ``title``, created at the end if new."""
        for s in self.sections:
            if s.title == title:
                return s
        s = Section(title)
        self.sections.append(s)
        return s

    def timing(self, step: str, seconds: float) -> None:
        self.timings[step] = round(self.timings.get(step, 0.0) + seconds, 3)

    @contextmanager
    def timed(self, step: str):
        start = time.monotonic()
        try:
            yield
        finally:
            self.timing(step, time.monotonic() - start)

    def finish(self, outcome: str, summary: str = "", error: str | None = None) -> RunReport:
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}; expected one of {OUTCOMES}")
        self.outcome = outcome
        self.summary = summary or self.summary
        self.error = error
        self.finished_at = _now_iso()
        return self

    # -- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return redact(
            {
                "title": self.title,
                "dag_id": self.dag_id,
                "run_id": self.run_id,
                "environment": self.environment,
                "reason": self.reason,
                "outcome": self.outcome,
                "summary": self.summary,
                "error": self.error,
                "started_at": self.started_at,
                "finished_at": self.finished_at,
                "sections": [
                    {
                        "title": s.title,
                        "values": dict(s.values),
                        "tables": [
                            {
                                "title": t.title,
                                "columns": t.columns,
                                "rows": [_redact_row(t.columns, r) for r in t.rows],
                            }
                            for t in s.tables
                        ],
                    }
                    for s in self.sections
                ],
                "timings": dict(self.timings),
            }
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunReport:
        sections = [
            Section(
                s["title"],
                dict(s.get("values", {})),
                [
                    Table(t["title"], list(t["columns"]), [list(r) for r in t["rows"]])
                    for t in s.get("tables", [])
                ],
            )
            for s in data.get("sections", [])
        ]
        return cls(
            title=data["title"],
            dag_id=data["dag_id"],
            run_id=data["run_id"],
            environment=data.get("environment", ""),
            reason=data.get("reason", ""),
            outcome=data.get("outcome", "running"),
            summary=data.get("summary", ""),
            error=data.get("error"),
            started_at=data.get("started_at") or _now_iso(),
            finished_at=data.get("finished_at"),
            sections=sections,
            timings=dict(data.get("timings", {})),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False, default=str)

    def to_markdown(self) -> str:
        d = self.to_dict()
        lines = [f"# {d['title']}", ""]
        for label, key in (
            ("Outcome", "outcome"),
            ("DAG", "dag_id"),
            ("Run", "run_id"),
            ("Environment", "environment"),
            ("Reason", "reason"),
            ("Started", "started_at"),
            ("Finished", "finished_at"),
        ):
            if d.get(key):
                lines.append(f"- **{label}:** {_md(d[key])}")
        if d["summary"]:
            lines += ["", d["summary"]]
        if d["error"]:
            lines += ["", "## Error", "", "```", str(d["error"]), "```"]
        for s in d["sections"]:
            lines += ["", f"## {s['title']}", ""]
            for k, v in s["values"].items():
                lines.append(f"- **{_md(k)}:** {_md(_scalar(v))}")
            for t in s["tables"]:
                lines += [
                    "",
                    f"**{_md(t['title'])}**",
                    "",
                    "| " + " | ".join(_md(c) for c in t["columns"]) + " |",
                    "|" + "---|" * len(t["columns"]),
                ]
                lines += ["| " + " | ".join(_md(_scalar(c)) for c in row) + " |" for row in t["rows"]]
                if not t["rows"]:
                    lines.append("| " + " | ".join(["(none)"] + [""] * (len(t["columns"]) - 1)) + " |")
        if d["timings"]:
            lines += ["", "## Timings", "", "| step | seconds |", "|---|---|"]
            lines += [f"| {_md(k)} | {v:.1f} |" for k, v in d["timings"].items()]
        return "\n".join(lines) + "\n"


_NAME_COLUMNS = ("name", "variable", "setting", "field")


def _redact_row(columns: list[str], row: list[Any]) -> list[Any]:
    cells = [redact(cell, columns[i] if i < len(columns) else None) for i, cell in enumerate(row)]
    # A name/value table (environment variables): the row's name decides for the cells after it.
    for i, column in enumerate(columns[: len(row)]):
        if column.lower() in _NAME_COLUMNS and isinstance(row[i], str) and is_sensitive_key(row[i]):
            return [c if j <= i or c in (None, "") else REDACTED for j, c in enumerate(cells)]
    return cells


def _scalar(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    return "" if value is None else str(value)


def _md(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def report_keys(prefix: str, report: RunReport) -> tuple[str, str]:
    safe_run = re.sub(r"[^A-Za-z0-9._-]+", "_", report.run_id)
    base = f"{prefix.strip('/')}/{report.dag_id}/{safe_run}"
    return f"{base}.json", f"{base}.md"


def write_report(s3_client: Any, bucket: str, prefix: str, report: RunReport) -> tuple[str, str]:
    """Write the report as JSON and Markdown under ``prefix/dag_id/run_id``; returns both keys."""
    json_key, md_key = report_keys(prefix, report)
    s3_client.put_object(
        Bucket=bucket, Key=json_key, Body=report.to_json().encode(), ContentType="application/json"
    )
    s3_client.put_object(
        Bucket=bucket,
        Key=md_key,
        Body=report.to_markdown().encode(),
        ContentType="text/markdown; charset=utf-8",
    )
    return json_key, md_key
