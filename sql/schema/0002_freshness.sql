-- Freshness (Alembic revision 0002): what the embedding workers are doing.
--
-- One row per worker process and model it embeds, kept up to date by the worker after every
-- batch (heartbeat, items done, rate, backlog). `visearch status` and the embedding_status view
-- (sql/status/) read it for the rate and ETA of running jobs. Rows of workers that stopped stay
-- (state 'stopped') until a newer worker clears rows older than a day.
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
    backlog       bigint,                        -- items queued for the model at the last batch
    PRIMARY KEY (worker_id, model_id)
);
