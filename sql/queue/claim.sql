-- Claim up to %(limit)s queued items of one model for worker %(worker)s, leased for
-- %(lease_seconds)s seconds. FOR UPDATE SKIP LOCKED: concurrent workers (on any machine)
-- never claim the same rows and never wait for each other. A lease that ran out (its worker
-- died mid-batch) makes the item claimable again; every claim counts as an attempt.
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
    ORDER BY q.enqueued_at
    LIMIT %(limit)s
    FOR UPDATE OF q SKIP LOCKED
)
UPDATE embedding_queue q
SET claimed_by = %(worker)s,
    claimed_until = now() + make_interval(secs => %(lease_seconds)s),
    attempts = q.attempts + 1
FROM ready
WHERE (q.model_id, q.item_kind, q.item_id) = (ready.model_id, ready.item_kind, ready.item_id)
RETURNING q.item_kind, q.item_id, q.enqueued_at, q.attempts;
