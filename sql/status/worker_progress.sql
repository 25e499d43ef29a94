-- After a committed batch: add %(items)s vectors and %(failures)s failed attempts, set the rate
-- (items/s) and the model's remaining backlog, heartbeat.
UPDATE embedding_workers
SET state = %(state)s,
    heartbeat_at = now(),
    items_done = items_done + %(items)s,
    failures = failures + %(failures)s,
    rate = coalesce(%(rate)s, rate),
    backlog = coalesce(%(backlog)s, backlog)
WHERE worker_id = %(worker_id)s AND model_id = %(model_id)s;
