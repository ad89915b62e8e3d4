"""The plan approval: Airflow's ApprovalOperator, keeping the answer for the run report.

A rejection skips the downstream tasks by raising, so the operator's return value (who answered,
when, what) never reaches XCom; the answer is pushed under ``answer`` before that happens.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator


class PlanApproval(ApprovalOperator):
    def execute_complete(self, context, event: dict[str, Any]) -> Any:
        if "error" not in event:
            responded_at = event.get("responded_at")
            context["ti"].xcom_push(
                key="answer",
                value={
                    "chosen_options": list(event.get("chosen_options") or []),
                    "responded_by_user": dict(event.get("responded_by_user") or {}),
                    "responded_at": responded_at.isoformat()
                    if hasattr(responded_at, "isoformat")
                    else str(responded_at),
                },
            )
        return super().execute_complete(context, event)
