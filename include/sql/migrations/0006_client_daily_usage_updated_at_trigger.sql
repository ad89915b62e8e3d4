-- Added by bisman-ops for the daily aggregation's late-usage check (CONTRACT.md: the project may add,
-- and says so). The check finds changed usage rows by updated_at, so updated_at must not depend on
-- every writer remembering to set it (an UPDATE that leaves it out, or sends a stale value of its own,
-- would hide the change). The database sets it on every insert and every update that changes the row;
-- an update that changes nothing keeps it, so the row is not read again for nothing.
-- clock_timestamp(), not now(): now() is the writer's transaction start, which can be long before it
-- commits; the aggregation's margin for late commits (usage_aggregation.py) then covers only the time
-- from the write to the commit. No column or name of the application's table changes.
CREATE OR REPLACE FUNCTION bisman_ops_client_daily_usage_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        NEW.updated_at := OLD.updated_at;
        IF NEW IS NOT DISTINCT FROM OLD THEN
            RETURN NEW;
        END IF;
    END IF;
    NEW.updated_at := clock_timestamp();
    RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER client_daily_usage_updated_at
    BEFORE INSERT OR UPDATE ON client_daily_usage
    FOR EACH ROW EXECUTE FUNCTION bisman_ops_client_daily_usage_updated_at();
