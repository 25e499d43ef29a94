-- Item id, image id and vector of every item that passes a search's filters (diverse sampling
-- clusters them), streamed by the caller as COPY (...) TO STDOUT (FORMAT BINARY).
-- <candidates> is `candidates` of sql/search/statements.sql as the search layer composed it for
-- the filters (its named parameters are the search's filters); <dim> the model's dimension (every
-- row then has the same binary size). Unordered on purpose: sorting 0.5 GB of rows would spill to disk;
-- the caller orders the ids.
SELECT c.item_id, c.image_id, c.embedding::vector({dim})
FROM ({candidates}) AS c
