-- The HNSW index of one model on one vector table: the only place its DDL is written.
-- Rendered by visearch.db.vectors.build_hnsw_index with psycopg.sql (identifiers and literals
-- quoted there): {concurrently} is CONCURRENTLY when the build runs outside a transaction
-- (searches and writes go on while it builds), {m} and {ef_construction} come from
-- visearch.db.vectors.hnsw_build_params(dim).
--
-- The vector columns have no fixed dimension, so the index is a partial index on the expression
-- embedding::vector(dim), restricted to the model's rows; a query is served by it when it says
-- `WHERE model_id = <id> ORDER BY embedding::vector(<dim>) <=> <query>`.
CREATE INDEX {concurrently} IF NOT EXISTS {index}
    ON {table} USING hnsw ((embedding::vector({dim})) vector_cosine_ops)
    WITH (m = {m}, ef_construction = {ef_construction})
    WHERE model_id = {model_id}
