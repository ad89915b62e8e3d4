"""Moved to ``bisman_ops.change.notify``; this name stays until every caller imports from there."""

from bisman_ops.change.notify import EVENTS, Notice, TeamNotifier, deliver, notice_from_context  # noqa: F401
