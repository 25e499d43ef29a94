-- Live worker processes on host %(host)s (heartbeat within 30 s): they share its CPU cores.
SELECT count(DISTINCT worker_id)
FROM embedding_workers
WHERE host = %(host)s AND state <> 'stopped' AND heartbeat_at > now() - interval '30 seconds';
