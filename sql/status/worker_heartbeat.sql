-- Every few seconds from the worker's LISTEN connection: still alive, whatever it is doing.
UPDATE embedding_workers SET heartbeat_at = now()
WHERE worker_id = %(worker_id)s AND state <> 'stopped';
