"""An alert followed from the rule to the receivers: firing in Prometheus, active in Alertmanager,
delivered by each receiver integration (email, Slack). ``where_it_stopped`` names the first hop it
has not reached, so a canary that never arrives fails naming Prometheus, Alertmanager or the
receiver.

What counts as "delivered" is an ``AlertInbox``: by default Alertmanager's own counters
(notifications sent per integration rose since the wait began, none failed); a deployment that can
read the mailbox and the Slack channel (the sandbox's sinks) registers that instead
(``BISMAN_IMPL_ALERT_INBOX``). How the application is made to answer errors on purpose is an
``AppFault`` (``BISMAN_IMPL_ALERT_FAULT``); there is none by default, so the threshold drill is
refused where nobody configured one.
"""

from __future__ import annotations

from typing import Any, Protocol

from bisman_ops.change.errors import CheckFailed

CHANNELS = ("email", "slack")
INBOX_EXTENSION = "alert_inbox"
FAULT_EXTENSION = "alert_fault"


class AlertInbox(Protocol):
    def mark(self) -> dict[str, Any]:
        """A bookmark taken before the wait (what had arrived already)."""
        ...

    def received(self, alertname: str, mark: dict[str, Any]) -> dict[str, bool]:
        """``{channel: received since mark}`` for every channel in ``CHANNELS``."""
        ...


class AppFault(Protocol):
    def start(self) -> dict[str, Any]: ...

    def stop(self) -> dict[str, Any]: ...


class AlertmanagerCounters:
    """Delivered = Alertmanager's ``alertmanager_notifications_total`` for the integration rose since
    the mark and its ``..._failed_total`` did not (it cannot tell which alert a notification held)."""

    def mark(self) -> dict[str, Any]:
        from bisman_ops.monitoring import prometheus

        return prometheus.alertmanager_notifications()

    def received(self, alertname: str, mark: dict[str, Any]) -> dict[str, bool]:
        from bisman_ops.monitoring import prometheus

        now = prometheus.alertmanager_notifications()
        out = {}
        for channel in CHANNELS:
            before, after = (
                mark.get(channel, {"sent": 0, "failed": 0}),
                now.get(channel, {"sent": 0, "failed": 0}),
            )
            out[channel] = after["sent"] > before["sent"] and after["failed"] == before["failed"]
        return out


class NoFault:
    def start(self) -> dict[str, Any]:
        raise CheckFailed(
            "a way to make the application answer errors",
            "none configured",
            "BISMAN_IMPL_ALERT_FAULT naming an AppFault",
            "Turn the alert_threshold_drill off for this environment, or configure one",
        )

    def stop(self) -> dict[str, Any]:
        return {"fault": "none"}


def inbox(environ: dict | None = None) -> AlertInbox:
    from bisman_ops import extension

    return extension.load(INBOX_EXTENSION, AlertmanagerCounters, environ)()


def app_fault(environ: dict | None = None) -> AppFault:
    from bisman_ops import extension

    return extension.load(FAULT_EXTENSION, NoFault, environ)()


def hops(
    alertname: str, prometheus_firing: list[dict], alertmanager_active: list[dict], received: dict[str, bool]
) -> dict[str, Any]:
    return {
        "prometheus_firing": any(a["labels"].get("alertname") == alertname for a in prometheus_firing),
        "alertmanager_active": any(a["labels"].get("alertname") == alertname for a in alertmanager_active),
        "received": received,
    }


def where_it_stopped(alertname: str, seen: dict[str, Any]) -> str | None:
    """None when the alert reached every channel; otherwise the first hop it has not reached."""
    if not seen["prometheus_firing"]:
        return (
            f"Prometheus: {alertname} is not firing (rule not loaded, expression false, or 'for' not elapsed)"
        )
    if not seen["alertmanager_active"]:
        return (
            f"Alertmanager: {alertname} fires in Prometheus but Alertmanager has no active alert "
            "(Prometheus' alertmanagers config, or a silence)"
        )
    missing = [c for c in CHANNELS if not seen["received"].get(c)]
    if missing:
        return (
            f"the receiver: {alertname} is active in Alertmanager but not received by "
            f"{' and '.join(missing)} (Alertmanager's log names the failed notification)"
        )
    return None


def wait_budget_s(
    for_s: float,
    evaluation_s: float,
    group_wait_s: float,
    group_interval_s: float,
    scrape_s: float = 0.0,
    repeat_interval_s: float = 0.0,
) -> float:
    """How long an alert may take to arrive, from the configured intervals: a scrape and an
    evaluation to see the condition, its ``for``, one more evaluation to fire, Alertmanager's
    group_wait (and a group_interval for a group that already sent; for an alert already firing,
    like the canary, its repeat_interval), doubled for slack."""
    return (
        2 * (scrape_s + 2 * evaluation_s + for_s + group_wait_s + group_interval_s + repeat_interval_s) + 30
    )
