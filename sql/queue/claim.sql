-- Claim up to %(limit)s queued items of one model for worker %(worker)s, leased for
-- %(lease_seconds)s seconds. FOR UPDATE SKIP LOCKED: concurrent workers (on any machine)
-- never claim the same rows and never wait for each other. A lease that ran out (its worker
-- died mid-batch) makes the item claimable again; a claim is counted in `claims`, never in
-- `attempts` (only a recorded failure is an attempt: sql/queue/fail.sql), so killed workers do
-- not use up an item's retries. Interactive items (priority 0) go before bulk backfills;
-- %(priority)s (NULL: any) claims only that priority (interactive items written while a bulk
-- round is in flight are embedded between its batches: visearch.embed).
-- Items of datasets with AI search disabled stay queued until it is enabled again.
WITH ready AS (
    SELECT q.model_id, q.item_kind, q.item_id
    FROM embedding_queue q
    JOIN datasets d ON d.id = q.dataset_id
    WHERE q.model_id = %(model_id)s
      AND NOT q.failed
      AND q.not_before <= now()
      AND (q.claimed_until IS NULL OR q.claimed_until < now())
      AND d.search_enabled
      AND (%(dataset_ids)s::bigint[] IS NULL OR q.dataset_id = ANY (%(dataset_ids)s::bigint[]))
      AND (%(priority)s::smallint IS NULL OR q.priority = %(priority)s::smallint)
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
