"""The application's SQL, kept in ``sql/*.sql`` next to this module."""

from __future__ import annotations

from functools import cache
from pathlib import Path

_SQL_DIR = Path(__file__).resolve().parent / "sql"


@cache
def sql(name: str) -> str:
    return (_SQL_DIR / f"{name}.sql").read_text()
