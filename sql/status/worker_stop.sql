-- A worker shutting down cleanly.
UPDATE embedding_workers SET state = 'stopped', heartbeat_at = now(), rate = NULL
WHERE worker_id = %(worker_id)s;
