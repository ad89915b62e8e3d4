"""What a gate is: a check that measures, compares with a threshold, and on failure says what was
checked, what was seen, what was expected and what to do. ``GateFailed`` carries the measurement
so the run report and the notification show it; the task layer turns it into a failure that is
not retried (a measurement does not change by retrying at once)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class GateFailed(Exception):
    """A check that failed. ``measured`` holds the values seen (no secrets)."""

    def __init__(self, message: str, measured: dict[str, Any] | None = None):
        super().__init__(message)
        self.measured = dict(measured or {})


def fail_unless(problems: list[str], what: str, next_step: str, measured: dict | None = None) -> None:
    """Raise GateFailed listing every problem at once, so the operator fixes them in one go."""
    if problems:
        listed = "; ".join(problems)
        raise GateFailed(f"{what}: {listed}. {next_step}", measured)


@dataclass
class Poke:
    """One look of a waiting check: done or not, what was seen, and the message to fail with if
    the wait times out now."""

    done: bool
    measured: dict[str, Any] = field(default_factory=dict)
    waiting_for: str = ""
