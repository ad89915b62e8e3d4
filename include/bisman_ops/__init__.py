"""bisman-ops: the logic behind the BISMAN ERP rollout, recurring and rollback DAGs."""
