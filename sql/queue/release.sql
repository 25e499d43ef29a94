-- Give back this worker's remaining claims for model %(model_id)s (shutdown, or items queued
-- again while they were being embedded); a claim is never an attempt.
UPDATE embedding_queue
SET claimed_by = NULL,
    claimed_until = NULL
WHERE model_id = %(model_id)s AND claimed_by = %(worker)s;
