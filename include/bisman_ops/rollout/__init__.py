"""The ``bisman_rollout`` DAG's phases, one module per checklist phase, each holding its checks
(functions of plain values and clients, tested without a scheduler) and its tasks (``@step``
functions the DAG file declares, fed the validated settings and the Terraform outputs)."""
