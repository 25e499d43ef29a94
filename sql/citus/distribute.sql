-- Turn visearch's schema into a distributed one on a Citus coordinator (`visearch db distribute`).
--
-- Distribution key: the image id. Every big table is hash-distributed on it and co-located
-- (same shard count, same hash ranges), so an image's row, bytes, labels, boxes, captions and
-- vectors sit in the same shard: per-image joins, the label/concept filters of a search and the
-- ranking statement (vectors JOIN images JOIN labels ... ORDER BY distance LIMIT k) run inside
-- each shard with that shard's HNSW index, and the coordinator only merges k rows per shard.
-- (A dataset key would put a whole dataset on one shard: no spread for a big dataset.)
--
-- Small, often-joined tables become reference tables (a copy on every node): datasets, concepts,
-- embedding_models, collections. The queue (embedding_queue) and the worker table stay on the
-- coordinator as Citus local tables: visearch workers claim from it with SKIP LOCKED and LISTEN
-- for its NOTIFY on the coordinator. Triggers on the distributed tables run on the workers'
-- shards (citus.enable_unsafe_triggers); they reach the coordinator's queue through Citus's
-- metadata on every node, and the queue's own notify trigger fires where workers listen.
--
-- Citus needs the distribution column in every primary key and unique constraint, so:
--   images UNIQUE (dataset_id, sha256) becomes a plain index (dedupe on re-ingest is per shard);
--   annotations and captions get PRIMARY KEY (image_id, id);
--   object_embeddings carries its box's image id since revision 0014 (PRIMARY KEY (model_id,
--   annotation_id, image_id), foreign key (annotation_id, image_id) to annotations): it is
--   distributed on image_id and co-located like the rest, so object ranking is shard-local.
--   Citus cannot cascade an update of a distribution column (nor update one at all), so that
--   key loses ON UPDATE CASCADE, and the fill-in trigger of 0014 is dropped: on Citus a writer
--   gives image_id itself (the coordinator routes the row by it before any shard trigger runs);
--   collection_items lose their foreign keys to images/annotations (a frozen ranking).
--
-- Tables of later migrations (0006-0010):
--   media_roots, tool_projects, tool_sync_rejects: reference tables (small; tool_sync_rejects
--     keeps its foreign key to tool_projects, reference to reference).
--   neighbour_pending (a work queue drained by refresh_neighbour_edges) and neighbour_edges
--     (keyed by model and item pair, not by one image): Citus local tables on the coordinator,
--     with their foreign keys to embedding_models.
--   tool_tasks: a Citus local table on the coordinator (its key is the tool's task id, which
--     ON CONFLICT (tool, task_id) needs; it keeps its foreign key to tool_projects). Its foreign
--     key to images is dropped (Citus cannot keep a key from a local table to a distributed
--     one); a row trigger on images (tool_tasks_forget_image) does its ON DELETE CASCADE.
--     Linking only takes existing images (sql/integrations/link_task_images.sql joins images).
-- Statement-level triggers with transition tables are not supported on distributed tables;
-- their work moves to row-level triggers (see below).

-- ---- constraints Citus cannot keep -----------------------------------------------------------
ALTER TABLE images DROP CONSTRAINT images_dataset_id_sha256_key;
CREATE INDEX images_dataset_sha256 ON images (dataset_id, sha256);
ALTER TABLE captions DROP CONSTRAINT captions_pkey CASCADE;
ALTER TABLE annotations DROP CONSTRAINT annotations_pkey CASCADE;  -- with the FKs into it
ALTER TABLE captions ADD PRIMARY KEY (image_id, id);
ALTER TABLE annotations ADD PRIMARY KEY (image_id, id);
ALTER TABLE collection_items DROP CONSTRAINT collection_items_image_id_fkey;
ALTER TABLE tool_tasks DROP CONSTRAINT tool_tasks_image_id_fkey;
DROP TRIGGER object_embeddings_fill_image_id ON object_embeddings;

-- ---- statement triggers with transition tables -> row triggers ---------------------------------
DROP TRIGGER images_dequeue ON images;
DROP TRIGGER annotations_dequeue ON annotations;
-- It runs on a worker's shard and deletes from the coordinator's queue: Citus calls that nested
-- distributed execution and wants it allowed explicitly (only for this function).
CREATE FUNCTION dequeue_deleted_row() RETURNS trigger
    LANGUAGE plpgsql SET citus.allow_nested_distributed_execution = on AS $$
BEGIN
    DELETE FROM embedding_queue WHERE item_kind = TG_ARGV[0] AND item_id = OLD.id;
    RETURN NULL;
END $$;
CREATE TRIGGER images_dequeue AFTER DELETE ON images
    FOR EACH ROW EXECUTE FUNCTION dequeue_deleted_row('image');
CREATE TRIGGER annotations_dequeue AFTER DELETE ON annotations
    FOR EACH ROW EXECUTE FUNCTION dequeue_deleted_row('object');
-- 0002's late-bytes trigger on image_content, per row: bytes inserted for an image that was not
-- queued (untried) earlier in this transaction queue the image and its boxes again. Rows
-- written by visearch ingest (image and bytes together) find their queue row and stop there.
DROP TRIGGER image_content_enqueue_late_bytes ON image_content;
DROP FUNCTION image_content_enqueue_late_bytes();
CREATE FUNCTION image_content_enqueue_late_bytes_row() RETURNS trigger
    LANGUAGE plpgsql SET citus.allow_nested_distributed_execution = on AS $$
DECLARE
    dataset bigint;
BEGIN
    IF EXISTS (SELECT 1 FROM embedding_queue q
               WHERE q.item_kind = 'image' AND q.item_id = NEW.image_id
                 AND q.enqueued_at >= transaction_timestamp() AND q.attempts = 0) THEN
        RETURN NULL;
    END IF;
    SELECT i.dataset_id INTO dataset FROM images i WHERE i.id = NEW.image_id;
    PERFORM enqueue_items('image', ARRAY[NEW.image_id], dataset);
    PERFORM enqueue_items('object', ARRAY(SELECT a.id FROM annotations a WHERE a.image_id = NEW.image_id), dataset);
    RETURN NULL;
END $$;
CREATE TRIGGER image_content_enqueue_late_bytes AFTER INSERT ON image_content
    FOR EACH ROW EXECUTE FUNCTION image_content_enqueue_late_bytes_row();
-- tool_tasks' ON DELETE CASCADE from images (the foreign key dropped above).
CREATE FUNCTION tool_tasks_forget_image() RETURNS trigger
    LANGUAGE plpgsql SET citus.allow_nested_distributed_execution = on AS $$
BEGIN
    DELETE FROM tool_tasks WHERE image_id = OLD.id;
    RETURN NULL;
END $$;
CREATE TRIGGER images_tool_tasks_forget AFTER DELETE ON images
    FOR EACH ROW EXECUTE FUNCTION tool_tasks_forget_image();

-- 0007's neighbour bookkeeping on the vector tables: the same work per row. A written vector
-- is queued in neighbour_pending; a deleted one takes its edges and pending row with it.
DROP TRIGGER image_embeddings_neighbours_insert ON image_embeddings;
DROP TRIGGER image_embeddings_neighbours_update ON image_embeddings;
DROP TRIGGER object_embeddings_neighbours_insert ON object_embeddings;
DROP TRIGGER object_embeddings_neighbours_update ON object_embeddings;
DROP TRIGGER image_embeddings_neighbours_delete ON image_embeddings;
DROP TRIGGER object_embeddings_neighbours_delete ON object_embeddings;
DROP FUNCTION neighbour_pending_images();
DROP FUNCTION neighbour_pending_objects();
DROP FUNCTION neighbour_edges_forget_images();
DROP FUNCTION neighbour_edges_forget_objects();
CREATE FUNCTION neighbour_pending_row() RETURNS trigger
    LANGUAGE plpgsql SET citus.allow_nested_distributed_execution = on AS $$
BEGIN
    INSERT INTO neighbour_pending (model_id, item_kind, item_id)
    VALUES (NEW.model_id, TG_ARGV[0], (to_jsonb(NEW) ->> TG_ARGV[1])::bigint)
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;
CREATE FUNCTION neighbour_edges_forget_row() RETURNS trigger
    LANGUAGE plpgsql SET citus.allow_nested_distributed_execution = on AS $$
DECLARE
    item bigint := (to_jsonb(OLD) ->> TG_ARGV[1])::bigint;
BEGIN
    DELETE FROM neighbour_edges x
    WHERE x.model_id = OLD.model_id AND x.item_kind = TG_ARGV[0] AND item IN (x.item_a, x.item_b);
    DELETE FROM neighbour_pending p
    WHERE p.model_id = OLD.model_id AND p.item_kind = TG_ARGV[0] AND p.item_id = item;
    RETURN NULL;
END $$;
CREATE TRIGGER image_embeddings_neighbours_write AFTER INSERT OR UPDATE ON image_embeddings
    FOR EACH ROW EXECUTE FUNCTION neighbour_pending_row('image', 'image_id');
CREATE TRIGGER object_embeddings_neighbours_write AFTER INSERT OR UPDATE ON object_embeddings
    FOR EACH ROW EXECUTE FUNCTION neighbour_pending_row('object', 'annotation_id');
CREATE TRIGGER image_embeddings_neighbours_delete AFTER DELETE ON image_embeddings
    FOR EACH ROW EXECUTE FUNCTION neighbour_edges_forget_row('image', 'image_id');
CREATE TRIGGER object_embeddings_neighbours_delete AFTER DELETE ON object_embeddings
    FOR EACH ROW EXECUTE FUNCTION neighbour_edges_forget_row('object', 'annotation_id');

-- ---- placement --------------------------------------------------------------------------------
-- Citus converts tables that reference a table being converted; to place each table exactly,
-- drop the remaining foreign keys, place every table, then add them back.
CREATE TEMP TABLE distribute_fks AS
    SELECT conrelid::regclass::text AS tbl, conname, pg_get_constraintdef(oid) AS def
    FROM pg_constraint WHERE contype = 'f' AND connamespace = 'public'::regnamespace;
UPDATE distribute_fks SET def = replace(def, ' ON UPDATE CASCADE', '')
WHERE tbl = 'object_embeddings' AND conname = 'object_embeddings_annotation_fkey';
DO $$
DECLARE fk record;
BEGIN
    FOR fk IN SELECT * FROM distribute_fks LOOP
        EXECUTE format('ALTER TABLE %I DROP CONSTRAINT %I', fk.tbl, fk.conname);
    END LOOP;
END $$;

SELECT create_reference_table('datasets');
SELECT create_reference_table('concepts');
SELECT create_reference_table('embedding_models');
SELECT create_reference_table('collections');
SELECT create_reference_table('ingest_rejects');
SELECT create_reference_table('media_roots');
SELECT create_reference_table('tool_projects');
SELECT create_reference_table('tool_sync_rejects');
SELECT citus_add_local_table_to_metadata('embedding_queue');
SELECT citus_add_local_table_to_metadata('embedding_workers');
SELECT citus_add_local_table_to_metadata('neighbour_pending');
SELECT citus_add_local_table_to_metadata('neighbour_edges');
SELECT citus_add_local_table_to_metadata('tool_tasks');

SELECT create_distributed_table('images', 'id');
SELECT create_distributed_table('image_content', 'image_id', colocate_with => 'images');
SELECT create_distributed_table('image_labels', 'image_id', colocate_with => 'images');
SELECT create_distributed_table('annotations', 'image_id', colocate_with => 'images');
SELECT create_distributed_table('captions', 'image_id', colocate_with => 'images');
SELECT create_distributed_table('image_embeddings', 'image_id', colocate_with => 'images');
SELECT create_distributed_table('object_embeddings', 'image_id', colocate_with => 'images');
SELECT create_distributed_table('collection_items', 'collection_id', colocate_with => 'none');

DO $$
DECLARE fk record;
BEGIN
    FOR fk IN SELECT * FROM distribute_fks LOOP
        EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I %s', fk.tbl, fk.conname, fk.def);
    END LOOP;
END $$;
DROP TABLE distribute_fks;

-- ---- the model backlog, one INSERT per kind ------------------------------------------------------
-- As in 0006 (a model's backlog is a bulk backfill, priority 1), as two statements that Citus
-- plans one at a time; the correlated NOT EXISTS joins on the image id (the distribution
-- column), so each runs inside the shards.
CREATE OR REPLACE FUNCTION enqueue_model_backlog(model integer) RETURNS bigint
    LANGUAGE plpgsql AS $$
DECLARE
    images_added bigint;
    objects_added bigint;
BEGIN
    INSERT INTO embedding_queue (model_id, item_kind, item_id, dataset_id, priority)
    SELECT model, 'image', i.id, i.dataset_id, 1
    FROM images i
    WHERE NOT EXISTS (SELECT 1 FROM image_embeddings e WHERE e.model_id = model AND e.image_id = i.id)
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS images_added = ROW_COUNT;
    INSERT INTO embedding_queue (model_id, item_kind, item_id, dataset_id, priority)
    SELECT model, 'object', a.id, i.dataset_id, 1
    FROM annotations a JOIN images i ON i.id = a.image_id
    WHERE NOT EXISTS (SELECT 1 FROM object_embeddings e
                      WHERE e.model_id = model AND e.image_id = a.image_id AND e.annotation_id = a.id)
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS objects_added = ROW_COUNT;
    RETURN images_added + objects_added;
END $$;

-- ---- enqueue_items: one row at a time, with the writer's priority ------------------------------
-- Called by the row triggers of images and annotations, which run on the workers' shards. The
-- single-node form (one INSERT ... SELECT over the active models x the items) goes to the
-- coordinator's queue as a COPY, and several rows of one statement (an ingest batch) break
-- that nested COPY ("received copy data after EOF marker"); an INSERT ... VALUES per row is
-- routed to the coordinator as a plain statement.
-- Queue priority (0006): the writer marks its transaction bulk with SET LOCAL
-- visearch.queue_priority = 'bulk' after SET LOCAL citus.propagate_set_commands = 'local' (so
-- that Citus repeats the SET LOCAL in the shards' sessions, where this runs; visearch ingest
-- does both). The priority is decided here and sent with the row: the coordinator's session
-- that receives it never saw the SET. (citus.propagate_set_commands as a database default
-- breaks the shards' own connections back to the coordinator: "the backend has already been
-- assigned a transaction id".) ON CONFLICT ... DO UPDATE: Citus wants immutable functions in SET, and
-- EXCLUDED.enqueued_at is the column default, clock_timestamp() of this insert: the same value.
CREATE OR REPLACE FUNCTION enqueue_items(kind text, item_ids bigint[], dataset bigint) RETURNS void
    LANGUAGE plpgsql SET citus.allow_nested_distributed_execution = on AS $$
DECLARE
    model integer;
    item bigint;
    prio smallint := CASE WHEN current_setting('visearch.queue_priority', true) = 'bulk' THEN 1 ELSE 0 END;
BEGIN
    FOR model IN SELECT m.id FROM embedding_models m WHERE m.is_active LOOP
        FOREACH item IN ARRAY item_ids LOOP
            INSERT INTO embedding_queue AS q (model_id, item_kind, item_id, dataset_id, priority)
            VALUES (model, kind, item, dataset, prio)
            ON CONFLICT (model_id, item_kind, item_id) DO UPDATE
                SET enqueued_at = EXCLUDED.enqueued_at, not_before = '-infinity', attempts = 0,
                    last_error = NULL, failed = false, dataset_id = EXCLUDED.dataset_id,
                    priority = EXCLUDED.priority;
        END LOOP;
    END LOOP;
END $$;

-- 0006's priority trigger on the queue, with one change: a row that comes from a shard's
-- trigger (a Citus internal session) carries the priority its writer chose (above), which the
-- trigger leaves as it is; every other writer is handled as on one node.
CREATE OR REPLACE FUNCTION embedding_queue_priority() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('visearch.queue_priority', true) = 'bulk' THEN
        NEW.priority := 1;
    ELSIF TG_OP = 'UPDATE' AND current_setting('application_name') NOT LIKE 'citus_internal%' THEN
        NEW.priority := 0;
    END IF;
    RETURN NEW;
END $$;

-- ---- NOTIFY only where it can be sent ---------------------------------------------------------
-- The enqueue triggers of distributed tables run on the workers' shards and insert into the
-- coordinator's queue over a Citus connection whose transaction is committed with two-phase
-- commit, and PostgreSQL cannot PREPARE a transaction that has sent NOTIFY. Such inserts skip
-- the notification; a visearch worker finds those rows at its next interval pass (its safety
-- net). Everything queued in the coordinator's own session (a new model's backlog, a dataset
-- re-enabled, a retry) still notifies at once.
CREATE OR REPLACE FUNCTION embedding_queue_notify() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('application_name') NOT LIKE 'citus_internal%' THEN
        PERFORM pg_notify('visearch_embedding_queue', '');
    END IF;
    RETURN NULL;
END $$;
