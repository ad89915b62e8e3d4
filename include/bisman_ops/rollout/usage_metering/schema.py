"""The usage tables as CONTRACT.md fixes them, checked from ``information_schema`` (not ``\\dt``):
each table exists, each column is there with its type, and the keys are the contract's (primary
key, unique ``events.dedup_key``, the tenant foreign keys). Every difference is named."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bisman_ops.change.errors import fail_unless

SQL_DIR = Path(__file__).with_name("sql")
TIMESTAMPTZ = "timestamp with time zone"


@dataclass(frozen=True)
class TableSpec:
    columns: dict[str, str]  # name -> information_schema data_type
    primary_key: tuple[str, ...]
    unique: tuple[tuple[str, ...], ...] = ()
    foreign_keys: dict[str, str] = field(default_factory=dict)  # column -> referenced table


CONTRACT_TABLES: dict[str, TableSpec] = {
    "tenant_usage": TableSpec(
        {"tenant_id": "bigint", "metric": "text", "period": "text", "period_start": "date",
         "quantity": "bigint", "computed_at": TIMESTAMPTZ},
        ("tenant_id", "metric", "period", "period_start")),
    "tenant_quotas": TableSpec(
        {"tenant_id": "bigint", "metric": "text", "period": "text", "quota": "bigint"},
        ("tenant_id", "metric", "period"), foreign_keys={"tenant_id": "tenants"}),
    "events": TableSpec(
        {"id": "bigint", "tenant_id": "bigint", "type": "text", "payload": "jsonb",
         "occurred_at": TIMESTAMPTZ, "dedup_key": "text"},
        ("id",), unique=(("dedup_key",),)),
    "client_daily_usage": TableSpec(
        {"tenant_id": "bigint", "usage_date": "date", "metric": "text", "quantity": "bigint",
         "updated_at": TIMESTAMPTZ},
        ("tenant_id", "usage_date", "metric"), foreign_keys={"tenant_id": "tenants"}),
}


def read_schema(conn: Any, tables: list[str]) -> dict[str, dict[str, Any]]:
    """``{table: {"columns": {name: type}, "primary_key": [...], "unique": [[...]], "foreign_keys":
    {column: table}}}`` for the tables that exist."""
    found: dict[str, dict[str, Any]] = {}
    for table, column, data_type, _nullable in conn.execute(
            (SQL_DIR / "columns.sql").read_text(), {"tables": tables}).fetchall():
        found.setdefault(table, {"columns": {}, "primary_key": [], "unique": [], "foreign_keys": {}})
        found[table]["columns"][column] = data_type
    for table, kind, _name, columns, referenced in conn.execute(
            (SQL_DIR / "keys.sql").read_text(), {"tables": tables}).fetchall():
        if table not in found:
            continue
        if kind == "PRIMARY KEY":
            found[table]["primary_key"] = list(columns)
        elif kind == "UNIQUE":
            found[table]["unique"].append(list(columns))
        elif len(columns) == 1:
            found[table]["foreign_keys"][columns[0]] = referenced
    return found


def schema_problems(found: dict[str, dict[str, Any]],
                    expected: dict[str, TableSpec] = CONTRACT_TABLES) -> list[str]:
    problems = []
    for table, spec in expected.items():
        seen = found.get(table)
        if seen is None:
            problems.append(f"table {table} does not exist")
            continue
        for column, data_type in spec.columns.items():
            if column not in seen["columns"]:
                problems.append(f"column {table}.{column} is missing")
            elif seen["columns"][column] != data_type:
                problems.append(f"column {table}.{column} is {seen['columns'][column]}, expected {data_type}")
        if tuple(seen["primary_key"]) != spec.primary_key:
            problems.append(f"{table} primary key is ({', '.join(seen['primary_key']) or 'none'}), expected "
                            f"({', '.join(spec.primary_key)})")
        for columns in spec.unique:
            if list(columns) not in seen["unique"]:
                problems.append(f"{table}.{', '.join(columns)} is not unique")
        for column, referenced in spec.foreign_keys.items():
            if seen["foreign_keys"].get(column) != referenced:
                problems.append(f"{table}.{column} has no foreign key to {referenced}")
    return problems


def verify_tables(conn: Any, expected: dict[str, TableSpec] = CONTRACT_TABLES) -> dict[str, Any]:
    found = read_schema(conn, sorted(expected))
    measured = {table: {"columns": len(found[table]["columns"]),
                        "primary_key": found[table]["primary_key"]} if table in found else "missing"
                for table in expected}
    fail_unless(schema_problems(found, expected), "usage tables in information_schema",
                "the tables, columns and keys of CONTRACT.md",
                "Run the application's migrations (clear migrations_task_started) or fix them, then clear "
                "this task", measured)
    return measured
