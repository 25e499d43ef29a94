-- Record failed items with their reason. They are retried after an exponential backoff
-- (%(backoff_seconds)s * 2^(attempts-1), at most an hour) until %(max_attempts)s attempts, then
-- marked failed; either way they stop holding up the rest of the queue. Each recorded failure
-- is one attempt (a claim whose lease merely expired is not).
UPDATE embedding_queue q
SET attempts = q.attempts + 1,
    last_error = f.reason,
    claimed_by = NULL,
    claimed_until = NULL,
    failed = q.attempts + 1 >= %(max_attempts)s,
    not_before = now() + least(interval '1 hour',
                               make_interval(secs => %(backoff_seconds)s * 2 ^ q.attempts))
FROM unnest(%(kinds)s::text[], %(ids)s::bigint[], %(reasons)s::text[]) AS f (item_kind, item_id, reason)
WHERE q.model_id = %(model_id)s
  AND q.item_kind = f.item_kind
  AND q.item_id = f.item_id
  AND q.claimed_by = %(worker)s;
