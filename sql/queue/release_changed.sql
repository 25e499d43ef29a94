-- Items of a finished batch that stayed queued because they changed while being embedded (a
-- newer enqueued_at): give the claim back at once, so that any
-- worker re-embeds the new content now instead of after the lease runs out.
UPDATE embedding_queue q
SET claimed_by = NULL,
    claimed_until = NULL
FROM unnest(%(kinds)s::text[], %(ids)s::bigint[]) AS batch (item_kind, item_id)
WHERE q.model_id = %(model_id)s
  AND q.item_kind = batch.item_kind
  AND q.item_id = batch.item_id
  AND q.claimed_by = %(worker)s;
