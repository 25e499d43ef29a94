-- Take finished items off the queue, only where this worker still holds the claim and the item
-- was not queued again meanwhile (a newer enqueued_at means it changed while being embedded:
-- it stays queued and is embedded again). Returns the items whose vectors may be written, in
-- the same transaction, so a crash loses or duplicates nothing.
DELETE FROM embedding_queue q
USING unnest(%(kinds)s::text[], %(ids)s::bigint[], %(enqueued_at)s::timestamptz[])
      AS done (item_kind, item_id, enqueued_at)
WHERE q.model_id = %(model_id)s
  AND q.item_kind = done.item_kind
  AND q.item_id = done.item_id
  AND q.enqueued_at = done.enqueued_at
  AND q.claimed_by = %(worker)s
RETURNING q.item_kind, q.item_id;
