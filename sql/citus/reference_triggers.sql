-- Run by `visearch db distribute` after sql/citus/distribute.sql.

-- ---- triggers of reference tables fire on the coordinator's copy only ------------------------
-- A write to a reference table is applied to its copy on every node, and each copy's triggers
-- (Citus names them <trigger>_<shard id>) would fire there: NOTIFY on a worker reaches no
-- visearch worker, and the model backlog would be queued once per node. They stay enabled on
-- the coordinator's copy (writes through the coordinator apply it locally) and are disabled on
-- the workers' copies (after distribute.sql has committed: run_command_on_workers uses its own
-- connections). Running `visearch db distribute` again (after adding a node) repeats this.
DO $$
DECLARE
    trig record;
    failed text;
BEGIN
    FOR trig IN
        SELECT t.tgrelid::regclass AS tbl, t.tgname, s.shardid
        FROM pg_trigger t JOIN pg_dist_shard s ON s.logicalrelid = t.tgrelid
        JOIN pg_dist_partition p ON p.logicalrelid = t.tgrelid AND p.partmethod = 'n' AND p.repmodel = 't'
        WHERE NOT t.tgisinternal
    LOOP
        SELECT string_agg(nodename || ':' || nodeport || ' ' || result, '; ') INTO failed
        FROM run_command_on_workers(format('ALTER TABLE %s DISABLE TRIGGER %I',
                                           shard_name(trig.tbl, trig.shardid), trig.tgname || '_' || trig.shardid))
        WHERE NOT success;
        IF failed IS NOT NULL THEN
            RAISE EXCEPTION 'could not disable trigger % on the workers'' copies of %: %', trig.tgname, trig.tbl, failed;
        END IF;
    END LOOP;
END $$;
