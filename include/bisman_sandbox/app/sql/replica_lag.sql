-- Replay lag on the replica: 0 when everything received is replayed (an idle primary would
-- otherwise look ever more behind), else the age of the last replayed transaction.
SELECT CASE
           WHEN NOT pg_is_in_recovery() THEN NULL
           WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
           ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())
       END::float8 AS lag
