"""The logic of the ``bisman_rollout`` DAG, one module per phase. Functions take plain values and
clients and return plain values, so they are tested without a scheduler; ``tasks`` is the edge
where Airflow connections become clients."""
