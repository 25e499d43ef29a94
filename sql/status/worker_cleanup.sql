-- At worker start: forget workers stopped or silent for more than a day.
DELETE FROM embedding_workers WHERE heartbeat_at < now() - interval '1 day';
