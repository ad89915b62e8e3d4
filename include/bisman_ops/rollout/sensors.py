"""Waiting checks of the rollout as reschedule-mode sensors: between looks the task gives its worker
slot back. A timeout fails with the last thing seen (``Poke.waiting_for``), not Airflow's generic
"sensor has timed out"."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue


class GateSensor(BaseSensorOperator):
    """Pokes ``bisman_ops.rollout.tasks.<poke_function>(context) -> Poke`` until it is done.

    ``timeout_param`` names the DAG param holding the timeout in seconds (the form decides it).
    """

    def __init__(self, *, poke_function: str, timeout_param: str | None = None, **kwargs: Any):
        kwargs.setdefault("mode", "reschedule")
        super().__init__(**kwargs)
        self.poke_function = poke_function
        self.timeout_param = timeout_param
        self._last = None

    def execute(self, context):
        from airflow.sdk.exceptions import AirflowSensorTimeout

        if self.timeout_param and context["params"].get(self.timeout_param):
            self.timeout = float(context["params"][self.timeout_param])
        try:
            return super().execute(context)
        except AirflowSensorTimeout:
            from bisman_ops.rollout import tasks

            last = self._last
            seen = f"{last.waiting_for}; measured {last.measured}" if last else "nothing measured"
            message = (
                f"{self.task_id} timed out after {self.timeout:.0f} s: {seen}. Fix the cause, then "
                "clear this task to wait again"
            )
            tasks.record_failure(context, message, last.measured if last else {})
            raise AirflowSensorTimeout(message) from None

    def poke(self, context) -> bool | PokeReturnValue:
        from bisman_ops.rollout import tasks

        poke = tasks.run_poke(self.poke_function, context)
        self._last = poke
        if poke.done:
            return PokeReturnValue(is_done=True, xcom_value={"measured": poke.measured})
        self.log.info("Waiting: %s", poke.waiting_for)
        return False
