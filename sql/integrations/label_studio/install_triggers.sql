-- Notify-only triggers on Label Studio's tables (installed by `visearch connect label-studio`).
--
-- {schema} is Label Studio's schema. The function lives in visearch's schema; the triggers are
-- AFTER ROW triggers that return NULL: they cannot change or veto Label Studio's rows, they
-- write nothing, and pg_notify is delivered only when Label Studio's transaction commits
-- (identical payloads in one transaction are folded into one). Payload: 'label-studio:<project id>'.
-- `DROP FUNCTION visearch_annotation_tool_notify() CASCADE` removes them all.
CREATE OR REPLACE FUNCTION visearch_annotation_tool_notify() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('visearch_annotation_tool', TG_ARGV[0] || ':' || OLD.project_id);
    ELSE
        PERFORM pg_notify('visearch_annotation_tool', TG_ARGV[0] || ':' || NEW.project_id);
    END IF;
    RETURN NULL;
END $$;

-- tasks imported or deleted (their images), annotations saved, edited or deleted (boxes, choices)
CREATE OR REPLACE TRIGGER visearch_notify AFTER INSERT OR UPDATE OF data OR DELETE ON {schema}.task
    FOR EACH ROW EXECUTE FUNCTION visearch_annotation_tool_notify('label-studio');
CREATE OR REPLACE TRIGGER visearch_notify AFTER INSERT OR UPDATE OR DELETE ON {schema}.task_completion
    FOR EACH ROW EXECUTE FUNCTION visearch_annotation_tool_notify('label-studio');
