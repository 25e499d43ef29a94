-- Embedding workers, newest first: alive when not stopped and heartbeat within
-- %(alive_seconds)s s (a killed worker stops heartbeating; its claims expire with their lease).
SELECT w.worker_id, m.name AS model, w.host, w.pid,
       CASE WHEN w.state = 'stopped' THEN 'stopped'
            WHEN w.heartbeat_at <= now() - make_interval(secs => %(alive_seconds)s) THEN 'dead'
            ELSE w.state END AS state,
       w.started_at, w.heartbeat_at, w.items_done, w.failures, w.rate, w.backlog
FROM embedding_workers w
JOIN embedding_models m ON m.id = w.model_id
ORDER BY w.started_at DESC, m.name;
