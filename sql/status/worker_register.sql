-- A worker starting on model %(model_id)s (or picking up a newly added model): its row, idle.
INSERT INTO embedding_workers (worker_id, model_id, host, pid, state)
VALUES (%(worker_id)s, %(model_id)s, %(host)s, %(pid)s, 'idle')
ON CONFLICT (worker_id, model_id) DO UPDATE SET state = 'idle', heartbeat_at = EXCLUDED.heartbeat_at;  -- = now(); Citus wants IMMUTABLE here
