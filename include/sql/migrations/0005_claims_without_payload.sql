-- bisman_ops_claims holds only who is sending what until when: the payload travels with the sender
-- and goes straight into events once sent (one write fewer per notification), and a claim needs no
-- "recorded" mark (its event is the record; the claim just expires). Pruned by claimed_at.
ALTER TABLE bisman_ops_claims DROP COLUMN IF EXISTS payload, DROP COLUMN IF EXISTS recorded_at;
DROP INDEX IF EXISTS bisman_ops_claims_recorded_at_idx;
CREATE INDEX IF NOT EXISTS bisman_ops_claims_claimed_at_idx ON bisman_ops_claims (claimed_at);
