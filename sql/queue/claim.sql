-- Claiming queued items (visearch.db.queue): what is claimable now is written once (`ready`),
-- and both statements that need it read it from there (composed with psycopg.sql: {ready}).
-- `-- name: X` blocks (visearch.resources.sql_blocks).

-- name: ready
-- The items of model %(model_id)s claimable now: not given up on (failed), not backing off
-- after a failure (not_before), not leased to a live worker (a lease that ran out, its worker
-- died mid-batch, makes the item claimable again), in a dataset with AI search enabled (items
-- of a disabled dataset stay queued until it is enabled again); of %(dataset_ids)s (NULL: all)
-- and of priority %(priority)s (NULL: any).
FROM embedding_queue q
JOIN datasets d ON d.id = q.dataset_id
WHERE q.model_id = %(model_id)s
  AND NOT q.failed
  AND q.not_before <= now()
  AND (q.claimed_until IS NULL OR q.claimed_until < now())
  AND d.search_enabled
  AND (%(dataset_ids)s::bigint[] IS NULL OR q.dataset_id = ANY (%(dataset_ids)s::bigint[]))
  AND (%(priority)s::smallint IS NULL OR q.priority = %(priority)s::smallint)

-- name: claim
-- Claim up to %(limit)s ready items for worker %(worker)s, leased for %(lease_seconds)s
-- seconds. FOR UPDATE SKIP LOCKED: concurrent workers (on any machine) never claim the same
-- rows and never wait for each other. A claim is counted in `claims`, never in `attempts` (only
-- a recorded failure is an attempt: sql/queue/fail.sql), so killed workers do not use up an
-- item's retries. Interactive items (priority 0) go before bulk backfills; a %(priority)s
-- claims only that priority (interactive items written while a bulk round is in flight are
-- embedded between its batches: visearch.embed).
WITH ready AS (
    SELECT q.model_id, q.item_kind, q.item_id
    {ready}
    ORDER BY q.priority, q.enqueued_at
    LIMIT %(limit)s
    FOR UPDATE OF q SKIP LOCKED
)
UPDATE embedding_queue q
SET claimed_by = %(worker)s,
    claimed_until = now() + make_interval(secs => %(lease_seconds)s),
    claims = q.claims + 1
FROM ready
WHERE (q.model_id, q.item_kind, q.item_id) = (ready.model_id, ready.item_kind, ready.item_id)
RETURNING q.item_kind, q.item_id, q.enqueued_at, q.attempts, q.priority;

-- name: waiting
-- Is anything ready (what `claim` would take)? One index probe (embedding_queue_ready_priority):
-- an embed run asks it between batches of a bulk round, with %(priority)s 0 (interactive), so an
-- interactive write waits for at most one batch; and with NULL between batches of its neighbour
-- refresh.
SELECT EXISTS (
    SELECT 1
    {ready}
);
