"""How rule files reach the environment's Prometheus, and the checks that they were loaded.

``RuleDelivery`` is the small interface (the checklist's ``kubectl apply`` assumes the Prometheus
Operator, which this platform does not run: CONTRACT.md). The default puts each file as a rule
groups namespace of Amazon Managed Service for Prometheus (``amp`` API); a deployment whose
Prometheus reads rule files from disk (the local sandbox) registers its own through
``bisman_ops.extension`` (``BISMAN_IMPL_RULE_DELIVERY``). After delivery, ``rules_loaded``
confirms through ``/api/v1/rules`` that every rule is loaded with health ok, and that the last
reload succeeded: a broken file makes Prometheus keep its previous rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml

EXTENSION = "rule_delivery"


class RuleDelivery(Protocol):
    name: str

    def deliver(self, files: dict[str, str]) -> dict[str, Any]:
        """Put every ``{file name: YAML text}`` where Prometheus loads rules from, and reload."""
        ...


@dataclass
class AmpRuleDelivery:
    """Amazon Managed Service for Prometheus: one rule groups namespace per file (no reload: AMP
    applies a namespace when it is ACTIVE). ``workspace_id`` from ``BISMAN_AMP_WORKSPACE_ID``."""

    workspace_id: str
    name: str = "amp"

    def deliver(self, files: dict[str, str]) -> dict[str, Any]:
        from bisman_ops.clients import aws

        amp = aws.client("amp")
        existing = {
            n["name"]
            for n in amp.list_rule_groups_namespaces(workspaceId=self.workspace_id).get(
                "ruleGroupsNamespaces", []
            )
        }
        done = {}
        for name, text in files.items():
            ns = name.removesuffix(".yml").replace(".", "-")
            call = amp.put_rule_groups_namespace if ns in existing else amp.create_rule_groups_namespace
            done[name] = call(workspaceId=self.workspace_id, name=ns, data=text.encode())["status"][
                "statusCode"
            ]
        return {"delivery": self.name, "namespaces": done}


def rule_delivery(environ: dict | None = None) -> RuleDelivery:
    import os

    from bisman_ops import extension

    env = os.environ if environ is None else environ
    impl = extension.load(EXTENSION, None, environ)
    if impl is not None:
        return impl()
    return AmpRuleDelivery(env.get("BISMAN_AMP_WORKSPACE_ID", ""))


def read_rule_files(paths: list[Path]) -> dict[str, str]:
    return {p.name: p.read_text() for p in paths}


def expected_rules(files: dict[str, str]) -> dict[str, list[str]]:
    """``{group name: [rule names]}`` the files define."""
    out: dict[str, list[str]] = {}
    for text in files.values():
        for group in (yaml.safe_load(text) or {}).get("groups") or []:
            out[group["name"]] = [r.get("alert") or r.get("record") for r in group.get("rules") or []]
    return out


def load_problems(
    expected: dict[str, list[str]],
    groups: list[dict[str, Any]],
    runtime: dict[str, Any],
    delivered_at: float | None = None,
) -> list[str]:
    """What is wrong with what Prometheus loaded: the last reload failed (it kept the old rules), a
    group or rule missing, a rule whose health is not ok."""
    from datetime import datetime

    problems = []
    if runtime.get("reloadConfigSuccess") is False:
        problems.append(
            "Prometheus' last reload failed (reloadConfigSuccess false): it kept the previous "
            "rules, so what is loaded is not what was delivered"
        )
    if delivered_at is not None and runtime.get("lastConfigTime"):
        loaded_at = datetime.fromisoformat(str(runtime["lastConfigTime"]).replace("Z", "+00:00")).timestamp()
        if loaded_at + 1 < delivered_at:
            problems.append(
                f"Prometheus' config was last loaded at {runtime['lastConfigTime']}, before the "
                "delivery: it was not reloaded"
            )
    loaded = {g["name"]: g for g in groups}
    for group, rules in expected.items():
        if group not in loaded:
            problems.append(f"group {group} not loaded")
            continue
        by_name = {r["name"]: r for r in loaded[group]["rules"]}
        for rule in rules:
            if rule not in by_name:
                problems.append(f"{group}/{rule} not loaded")
            elif by_name[rule].get("health") != "ok":
                problems.append(
                    f"{group}/{rule} health {by_name[rule].get('health')}: "
                    f"{by_name[rule].get('lastError', '')}"
                )
    return problems
