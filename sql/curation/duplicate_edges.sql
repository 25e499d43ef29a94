-- Near-duplicate pairs touching a dataset: the kept neighbour edges (neighbour_edges, filled
-- from HNSW k-NN lookups by refresh_neighbour_edges) with similarity >= %(threshold)s, where at
-- least one end is an item of dataset %(dataset_id)s. Items of other datasets may appear (a
-- photo present in two datasets). Edges of items deleted since are gone (triggers).
SELECT x.item_a, x.item_b, x.similarity
FROM neighbour_edges x
WHERE x.model_id = %(model_id)s AND x.item_kind = %(kind)s AND x.similarity >= %(threshold)s
  AND EXISTS (
      SELECT 1 FROM images i
      WHERE i.dataset_id = %(dataset_id)s AND i.id IN (x.item_a, x.item_b) AND %(kind)s = 'image'
      UNION ALL
      SELECT 1 FROM annotations a JOIN images i ON i.id = a.image_id
      WHERE i.dataset_id = %(dataset_id)s AND a.id IN (x.item_a, x.item_b) AND %(kind)s = 'object');
