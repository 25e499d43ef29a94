-- Staleness, kept by the database itself (Alembic revision 0001).
--
-- Whatever client writes the tables (visearch, psql, an annotation tool), an item becomes stale
-- for every active model in the same transaction as the change that affects its embedding:
--   * a new image, or an image whose content changed (sha256 or image_content.content): the
--     image and all its boxes (their crops come from its pixels);
--   * a new annotation, or one whose box or image changed: that object.
-- Metadata-only changes (labels, captions, jsonb, concept) do not re-embed.
-- Deleting an item deletes its vectors (foreign keys) and its queue rows (triggers below).
-- Each enqueue sends NOTIFY visearch_embedding_queue so that a waiting worker wakes at once.

-- Queue (or re-queue) items for every active model. Re-queuing resets retries: the item changed,
-- so an earlier failure says nothing about it.
CREATE FUNCTION enqueue_items(kind text, item_ids bigint[], dataset bigint) RETURNS void
    LANGUAGE sql AS $$
    INSERT INTO embedding_queue AS q (model_id, item_kind, item_id, dataset_id)
    SELECT m.id, kind, i, dataset
    FROM embedding_models m CROSS JOIN unnest(item_ids) AS i
    WHERE m.is_active
    ON CONFLICT (model_id, item_kind, item_id) DO UPDATE
        SET enqueued_at = clock_timestamp(), not_before = '-infinity', attempts = 0,
            last_error = NULL, failed = false, dataset_id = EXCLUDED.dataset_id;
$$;

-- Queue everything a model has not embedded yet (used when a model is added or re-activated).
CREATE FUNCTION enqueue_model_backlog(model integer) RETURNS bigint
    LANGUAGE sql AS $$
    WITH added AS (
        INSERT INTO embedding_queue (model_id, item_kind, item_id, dataset_id)
        SELECT model, 'image', i.id, i.dataset_id
        FROM images i
        WHERE NOT EXISTS (SELECT 1 FROM image_embeddings e WHERE e.model_id = model AND e.image_id = i.id)
        UNION ALL
        SELECT model, 'object', a.id, i.dataset_id
        FROM annotations a JOIN images i ON i.id = a.image_id
        WHERE NOT EXISTS (SELECT 1 FROM object_embeddings e WHERE e.model_id = model AND e.annotation_id = a.id)
        ON CONFLICT DO NOTHING
        RETURNING 1
    )
    SELECT count(*) FROM added;
$$;

CREATE FUNCTION images_enqueue() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM enqueue_items('image', ARRAY[NEW.id], NEW.dataset_id);
    ELSIF NEW.sha256 IS DISTINCT FROM OLD.sha256 THEN
        PERFORM enqueue_items('image', ARRAY[NEW.id], NEW.dataset_id);
        PERFORM enqueue_items('object', ARRAY(SELECT id FROM annotations WHERE image_id = NEW.id),
                              NEW.dataset_id);
    ELSIF NEW.dataset_id IS DISTINCT FROM OLD.dataset_id THEN
        UPDATE embedding_queue SET dataset_id = NEW.dataset_id
        WHERE (item_kind = 'image' AND item_id = NEW.id)
           OR (item_kind = 'object' AND item_id IN (SELECT id FROM annotations WHERE image_id = NEW.id));
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER images_enqueue
    AFTER INSERT OR UPDATE OF sha256, dataset_id ON images
    FOR EACH ROW EXECUTE FUNCTION images_enqueue();

CREATE FUNCTION image_content_enqueue() RETURNS trigger
    LANGUAGE plpgsql AS $$
DECLARE
    dataset bigint;
BEGIN
    IF NEW.content IS DISTINCT FROM OLD.content THEN
        SELECT dataset_id INTO dataset FROM images WHERE id = NEW.image_id;
        PERFORM enqueue_items('image', ARRAY[NEW.image_id], dataset);
        PERFORM enqueue_items('object', ARRAY(SELECT id FROM annotations WHERE image_id = NEW.image_id),
                              dataset);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER image_content_enqueue
    AFTER UPDATE OF content ON image_content
    FOR EACH ROW EXECUTE FUNCTION image_content_enqueue();

CREATE FUNCTION annotations_enqueue() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT'
       OR (NEW.image_id, NEW.bbox_x, NEW.bbox_y, NEW.bbox_w, NEW.bbox_h)
          IS DISTINCT FROM (OLD.image_id, OLD.bbox_x, OLD.bbox_y, OLD.bbox_w, OLD.bbox_h) THEN
        PERFORM enqueue_items('object', ARRAY[NEW.id], (SELECT dataset_id FROM images WHERE id = NEW.image_id));
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER annotations_enqueue
    AFTER INSERT OR UPDATE OF image_id, bbox_x, bbox_y, bbox_w, bbox_h ON annotations
    FOR EACH ROW EXECUTE FUNCTION annotations_enqueue();

-- Queue rows have no foreign key to their item (it is one of two tables), so deletes clean up here.
CREATE FUNCTION dequeue_deleted_item() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM embedding_queue
    WHERE item_kind = TG_ARGV[0] AND item_id IN (SELECT id FROM deleted_rows);
    RETURN NULL;
END $$;

CREATE TRIGGER images_dequeue AFTER DELETE ON images
    REFERENCING OLD TABLE AS deleted_rows
    FOR EACH STATEMENT EXECUTE FUNCTION dequeue_deleted_item('image');
CREATE TRIGGER annotations_dequeue AFTER DELETE ON annotations
    REFERENCING OLD TABLE AS deleted_rows
    FOR EACH STATEMENT EXECUTE FUNCTION dequeue_deleted_item('object');

-- A newly added or re-activated model gets the whole backlog queued.
CREATE FUNCTION embedding_models_enqueue_backlog() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.is_active AND (TG_OP = 'INSERT' OR NOT OLD.is_active) THEN
        PERFORM enqueue_model_backlog(NEW.id);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER embedding_models_enqueue_backlog
    AFTER INSERT OR UPDATE OF is_active ON embedding_models
    FOR EACH ROW EXECUTE FUNCTION embedding_models_enqueue_backlog();

-- One notification per statement, not per row: a 10k-row COPY wakes the worker once.
CREATE FUNCTION embedding_queue_notify() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('visearch_embedding_queue', '');
    RETURN NULL;
END $$;

CREATE TRIGGER embedding_queue_notify_insert AFTER INSERT ON embedding_queue
    FOR EACH STATEMENT EXECUTE FUNCTION embedding_queue_notify();
CREATE TRIGGER embedding_queue_notify_update AFTER UPDATE OF enqueued_at ON embedding_queue
    FOR EACH STATEMENT EXECUTE FUNCTION embedding_queue_notify();
