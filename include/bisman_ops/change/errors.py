"""The one error type of a failed check: what was checked, what was seen, what was expected and
what to do next. The step wrapper fails the task on it without a retry (a measurement does not
change by measuring again at once)."""

from __future__ import annotations

from typing import Any


class CheckFailed(Exception):
    """A check that failed. ``measured`` holds the values seen (no secrets)."""

    def __init__(self, checked: str, seen: Any, expected: Any, next_step: str,
                 measured: dict[str, Any] | None = None):
        self.checked = str(checked)
        self.seen = seen
        self.expected = expected
        self.next_step = str(next_step)
        self.measured = dict(measured or {})
        super().__init__(self.message())

    def message(self) -> str:
        text = f"{self.checked}: seen {self.seen}; expected {self.expected}"
        return f"{text}. {self.next_step}" if self.next_step else text

    def as_dict(self) -> dict[str, Any]:
        return {"checked": self.checked, "seen": self.seen, "expected": self.expected,
                "next_step": self.next_step, "message": self.message(), "measured": self.measured}


def fail_unless(problems: list[str], checked: str, expected: str, next_step: str,
                measured: dict[str, Any] | None = None) -> None:
    """Raise CheckFailed listing every problem at once, so the operator fixes them in one go."""
    if problems:
        raise CheckFailed(checked, "; ".join(problems), expected, next_step, measured)
