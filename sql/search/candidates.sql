-- Every item that passes a search's filters, unranked: one row (item_id, image_id, embedding)
-- per image (image_id twice) or box. Curation reads it (diverse samples cluster these vectors;
-- visearch.curation.search_seam). {source} and {filters} are the search's own fragments
-- (sql/search/fragments.sql, composed by visearch.search.statements.Shape.candidates), so a
-- sample sees exactly the items a search with the same filters may return.
SELECT {item_id} AS item_id, {image_id} AS image_id, e.embedding
FROM {source}
WHERE e.model_id = %(model_id)s
  AND {filters}
