"""The recurring jobs behind the scheduled DAGs: daily usage aggregation, trial expiry, quota alerts
and the weekly audit. Each module takes a psycopg connection (and clients) plus plain values and
returns a dataclass, so it is tested against real services without a scheduler."""
