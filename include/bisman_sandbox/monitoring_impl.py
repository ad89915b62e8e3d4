"""The sandbox's implementations of the monitoring phase's plug-in points (registered by
``grafana.settings`` as ``BISMAN_IMPL_*``): rule files into Prometheus' rules directory and a
reload, the stand-in application's fault switch, and the mail/Slack sinks as the alert inbox."""

from __future__ import annotations

import json
import os
from typing import Any

from bisman_sandbox import monitoring, sinks
from bisman_sandbox.context import SandboxContext
from bisman_sandbox.process import SandboxError

PREFIX = "rollout-"  # the files this delivery owns in the rules directory


class SandboxRuleDelivery:
    name = "sandbox-rules-dir"

    def __init__(self, ctx: SandboxContext | None = None):
        self.ctx = ctx or SandboxContext.from_env()

    def deliver(self, files: dict[str, str]) -> dict[str, Any]:
        directory = monitoring.rules_dir(self.ctx)
        wanted = {PREFIX + name for name in files}
        for stale in directory.glob(PREFIX + "*"):
            if stale.name not in wanted:
                stale.unlink()
        for name, text in files.items():
            tmp = directory / f".{PREFIX}{name}.tmp"
            tmp.write_text(text)
            os.replace(tmp, directory / f"{PREFIX}{name}")
        try:
            monitoring.reload_prometheus(self.ctx)
        except SandboxError as exc:
            return {"delivery": self.name, "directory": str(directory), "reloaded": False, "error": str(exc)}
        return {"delivery": self.name, "directory": str(directory), "files": sorted(wanted), "reloaded": True}


class SandboxAppFault:
    """The stand-in application answers 500 to API requests while its fault file exists."""

    def __init__(self, ctx: SandboxContext | None = None):
        self.ctx = ctx or SandboxContext.from_env()

    def _file(self):
        from bisman_sandbox.app_server import fault_file

        return fault_file(self.ctx)

    def start(self) -> dict[str, Any]:
        self._file().parent.mkdir(parents=True, exist_ok=True)
        self._file().write_text("rollout alert drill\n")
        return {"fault": "app answers 500", "switch": str(self._file())}

    def stop(self) -> dict[str, Any]:
        self._file().unlink(missing_ok=True)
        return {"fault": "off", "switch_present": self._file().exists()}


class SandboxInbox:
    """Received = a mail to the team and a Slack post naming the alert, captured by the sinks."""

    def __init__(self, ctx: SandboxContext | None = None):
        self.ctx = ctx or SandboxContext.from_env()

    def mark(self) -> dict[str, Any]:
        return {"email": len(sinks.captured_mail(self.ctx)), "slack": len(sinks.captured_slack(self.ctx))}

    def received(self, alertname: str, mark: dict[str, Any]) -> dict[str, bool]:
        mail = sinks.captured_mail(self.ctx)[int(mark.get("email", 0)):]
        slack = sinks.captured_slack(self.ctx)[int(mark.get("slack", 0)):]
        return {
            "email": any(alertname in f"{m.get('subject', '')}\n{m.get('text', '')}" for m in mail),
            "slack": any(alertname in json.dumps(p.get("payload")) for p in slack),
        }
