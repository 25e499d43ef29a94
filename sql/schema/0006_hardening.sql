-- Hardening (Alembic revision 0006).

-- Queue priority: interactive writes (another client's INSERT, a single upload) are claimed
-- before bulk backfills (a folder ingest, a new model's backlog), so a row written by an
-- annotation tool is searchable within seconds even while 10k images are being embedded.
-- 0 = interactive (the default for every client), 1 = bulk. A writer marks its transaction
-- bulk with SET LOCAL visearch.queue_priority = 'bulk' (visearch ingest does).
ALTER TABLE embedding_queue ADD COLUMN priority smallint NOT NULL DEFAULT 0;
-- Claims taken on the item (attempts counts only real failures): a worker killed mid-batch
-- lets its lease expire, which is not the item's fault and must not use up its retries.
ALTER TABLE embedding_queue ADD COLUMN claims integer NOT NULL DEFAULT 0;
UPDATE embedding_queue SET claims = attempts;

CREATE FUNCTION embedding_queue_priority() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('visearch.queue_priority', true) = 'bulk' THEN
        NEW.priority := 1;
    ELSIF TG_OP = 'UPDATE' THEN  -- queued again (content changed) by an interactive writer
        NEW.priority := 0;
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER embedding_queue_priority
    BEFORE INSERT OR UPDATE OF enqueued_at ON embedding_queue
    FOR EACH ROW EXECUTE FUNCTION embedding_queue_priority();

-- A new or re-activated model's whole backlog is a bulk backfill.
CREATE OR REPLACE FUNCTION enqueue_model_backlog(model integer) RETURNS bigint
    LANGUAGE sql AS $$
    WITH added AS (
        INSERT INTO embedding_queue (model_id, item_kind, item_id, dataset_id, priority)
        SELECT model, 'image', i.id, i.dataset_id, 1
        FROM images i
        WHERE NOT EXISTS (SELECT 1 FROM image_embeddings e WHERE e.model_id = model AND e.image_id = i.id)
        UNION ALL
        SELECT model, 'object', a.id, i.dataset_id, 1
        FROM annotations a JOIN images i ON i.id = a.image_id
        WHERE NOT EXISTS (SELECT 1 FROM object_embeddings e WHERE e.model_id = model AND e.annotation_id = a.id)
        ON CONFLICT DO NOTHING
        RETURNING 1
    )
    SELECT count(*) FROM added;
$$;

-- Claims take interactive items first, then the oldest (sql/queue/claim.sql).
CREATE INDEX embedding_queue_ready_priority ON embedding_queue (model_id, priority, enqueued_at)
    WHERE NOT failed;

-- Folders reference-only images may be served from (`/v1/images/{id}/original`, thumbnails,
-- crops, embedding). `visearch ingest` records each folder it ingests; VISEARCH_MEDIA_ROOTS
-- replaces the list. A source_uri outside every root (after resolving symlinks) is refused.
CREATE TABLE media_roots (
    path      text PRIMARY KEY,                 -- absolute, symlinks resolved
    added_at  timestamptz NOT NULL DEFAULT now()
);
