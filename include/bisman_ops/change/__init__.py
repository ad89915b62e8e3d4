"""What every change DAG (the rollout and the three rollbacks) runs on.

- ``step``: the task wrapper (``@step``, ``@step.sensor``): measurement or failure recorded for the
  report, the change lock's lease renewed, a failed check raised as ``CheckFailed`` and not retried.
- ``lock``: the environment's change lock on DynamoDB (lease, fencing check before each mutation).
- ``approval``: the one approval operator (``ChangeApproval``) and ``approved(answer)``.
- ``report``: the run report assembled from the DAG's tasks, JSON + Markdown to S3, redacted.
- ``notify``: the team notifier, email + Slack.

Every module here is cheap to import at parse time: client libraries load when a task runs.
"""
