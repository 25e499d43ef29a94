-- Freshness (Alembic revision 0002): embedding workers' progress, which model serves searches,
-- and two staleness cases 0001 missed. Queue semantics are 0001's (0001_queue_triggers.sql).

-- One row per worker process and model it embeds. The worker updates it after every batch
-- (items done, rate, backlog) and heartbeats every few seconds from its LISTEN connection, so
-- `visearch status` can tell running jobs (fresh heartbeat) from dead ones and give a rate and
-- an ETA. Rows of stopped or dead workers stay, for the record, until a worker starting later
-- deletes those older than a day.
CREATE TABLE embedding_workers (
    worker_id     text NOT NULL,                 -- host:pid:random, as in embedding_queue.claimed_by
    model_id      integer NOT NULL REFERENCES embedding_models (id) ON DELETE CASCADE,
    host          text NOT NULL,
    pid           integer NOT NULL,
    state         text NOT NULL DEFAULT 'idle' CHECK (state IN ('idle', 'embedding', 'stopped')),
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now(),
    items_done    bigint NOT NULL DEFAULT 0,     -- vectors written since the worker started
    failures      bigint NOT NULL DEFAULT 0,     -- failed attempts since the worker started
    rate          real,                          -- items/s, moving average over recent batches
    backlog       bigint,                        -- items queued for the model after the last batch
    PRIMARY KEY (worker_id, model_id)
);

-- When a model was last activated: searches prefer the most recently activated model that
-- covers the searched datasets (see sql/status/serving_model.sql).
ALTER TABLE embedding_models ADD COLUMN activated_at timestamptz;
UPDATE embedding_models SET activated_at = created_at;
ALTER TABLE embedding_models ALTER COLUMN activated_at SET DEFAULT clock_timestamp();
ALTER TABLE embedding_models ALTER COLUMN activated_at SET NOT NULL;

CREATE FUNCTION embedding_models_stamp_activation() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.is_active AND NOT OLD.is_active THEN
        NEW.activated_at := clock_timestamp();
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER embedding_models_stamp_activation
    BEFORE UPDATE OF is_active ON embedding_models
    FOR EACH ROW EXECUTE FUNCTION embedding_models_stamp_activation();

-- Bytes that arrive after their image row. A tool that commits the `images` row first and its
-- `image_content` later leaves a window in which a worker may claim the image, find no bytes
-- and record a failure (then wait out a backoff, or give up). Queue the image and its boxes
-- again when bytes are inserted for an image that was not queued earlier in this same
-- transaction: the usual writer (visearch ingest: row and bytes together) pays one index probe
-- per row and queues nothing twice. 0001 covered only UPDATEs of image_content.
CREATE FUNCTION image_content_enqueue_late_bytes() RETURNS trigger
    LANGUAGE plpgsql AS $$
DECLARE
    late record;
BEGIN
    FOR late IN
        SELECT i.dataset_id, array_agg(i.id) AS ids
        FROM new_rows n
        JOIN images i ON i.id = n.image_id
        WHERE NOT EXISTS (
            -- queued in this transaction (clock_timestamp() >= the transaction's start) and untried
            SELECT 1 FROM embedding_queue q
            WHERE q.item_kind = 'image' AND q.item_id = i.id
              AND q.enqueued_at >= transaction_timestamp() AND q.attempts = 0)
        GROUP BY i.dataset_id
    LOOP
        PERFORM enqueue_items('image', late.ids, late.dataset_id);
        PERFORM enqueue_items('object', ARRAY(SELECT id FROM annotations WHERE image_id = ANY (late.ids)),
                              late.dataset_id);
    END LOOP;
    RETURN NULL;
END $$;

CREATE TRIGGER image_content_enqueue_late_bytes
    AFTER INSERT ON image_content
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION image_content_enqueue_late_bytes();

-- Enabling AI search on a dataset makes its accumulated queue claimable: wake the workers now
-- rather than at their next scheduled run, whichever client flipped the flag. The notification
-- is the queue's own (embedding_queue_notify(), 0001_queue_triggers.sql).
CREATE TRIGGER datasets_enabled_notify
    AFTER UPDATE OF search_enabled ON datasets
    FOR EACH ROW WHEN (NEW.search_enabled AND NOT OLD.search_enabled)
    EXECUTE FUNCTION embedding_queue_notify();

-- Per dataset and model: how far its embeddings are. For analysts (psql, BI tools) and for
-- `visearch status`. Counts, all of items (images + boxes):
--   items        images + objects (boxes) in the dataset
--   embedded     items with a vector for the model (possibly an older one, if stale)
--   stale        queued and not given up on: new or changed items waiting, being embedded, or
--                backing off after a failed attempt
--   retrying     of stale, those that failed at least one attempt (last_error says why)
--   in_progress  of stale, those claimed by a worker whose lease has not run out
--   failed       given up on after the attempt limit (last_error says why); no vector, or an
--                outdated one
--   covered      the model covers the dataset: nothing stale (failed items do not block)
CREATE VIEW embedding_status AS
SELECT d.id AS dataset_id,
       d.name AS dataset,
       d.search_enabled,
       m.id AS model_id,
       m.name AS model,
       m.is_active AS model_active,
       n.images,
       n.objects,
       n.images + n.objects AS items,
       v.embedded,
       q.stale,
       q.retrying,
       q.in_progress,
       q.failed,
       q.stale = 0 AS covered
FROM datasets d
CROSS JOIN embedding_models m
CROSS JOIN LATERAL (
    SELECT (SELECT count(*) FROM images i WHERE i.dataset_id = d.id) AS images,
           (SELECT count(*) FROM annotations a JOIN images i ON i.id = a.image_id
            WHERE i.dataset_id = d.id) AS objects
) n
CROSS JOIN LATERAL (
    SELECT (SELECT count(*) FROM image_embeddings e JOIN images i ON i.id = e.image_id
            WHERE e.model_id = m.id AND i.dataset_id = d.id)
         + (SELECT count(*) FROM object_embeddings e JOIN annotations a ON a.id = e.annotation_id
            JOIN images i ON i.id = a.image_id
            WHERE e.model_id = m.id AND i.dataset_id = d.id) AS embedded
) v
CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE NOT q.failed) AS stale,
           count(*) FILTER (WHERE NOT q.failed AND q.attempts > 0
                            AND (q.claimed_until IS NULL OR q.claimed_until < now())) AS retrying,
           count(*) FILTER (WHERE NOT q.failed AND q.claimed_until >= now()) AS in_progress,
           count(*) FILTER (WHERE q.failed) AS failed
    FROM embedding_queue q
    WHERE q.dataset_id = d.id AND q.model_id = m.id
) q;
