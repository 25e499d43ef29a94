-- Is anything claimable now for model %(model_id)s (what sql/queue/claim.sql would take), of
-- priority %(priority)s (0 = interactive), or of any priority when it is NULL? One index probe
-- (embedding_queue_ready_priority): an embed run asks it between batches of a bulk round, so an
-- interactive write waits for at most one batch, and between batches of its neighbour refresh.
SELECT EXISTS (
    SELECT 1
    FROM embedding_queue q
    JOIN datasets d ON d.id = q.dataset_id
    WHERE q.model_id = %(model_id)s
      AND (%(priority)s::smallint IS NULL OR q.priority = %(priority)s::smallint)
      AND NOT q.failed
      AND q.not_before <= now()
      AND (q.claimed_until IS NULL OR q.claimed_until < now())
      AND d.search_enabled
      AND (%(dataset_ids)s::bigint[] IS NULL OR q.dataset_id = ANY (%(dataset_ids)s::bigint[]))
);
