-- Revision 0005: index builds leave PL/pgSQL.
--
-- ensure_hnsw_index() ran CREATE INDEX inside a function, i.e. inside a transaction: the build
-- locked the vector table against writes for its whole duration and could never be CONCURRENTLY.
-- visearch now builds the index from Python (visearch.db.vectors.build_hnsw_index, DDL in
-- sql/vectors/create_hnsw_index.sql) with CREATE INDEX CONCURRENTLY. hnsw_index_name() and
-- drop_hnsw_index() stay: the model-delete trigger uses them.
DROP FUNCTION IF EXISTS ensure_hnsw_index(text, integer);
