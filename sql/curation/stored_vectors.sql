-- The stored vectors of items %(ids)s (bigint[]) of kind %(kind)s ('image' | 'object') for
-- model %(model_id)s. Items without a vector are simply absent.
SELECT e.image_id, e.embedding FROM image_embeddings e
WHERE %(kind)s = 'image' AND e.model_id = %(model_id)s AND e.image_id = ANY (%(ids)s::bigint[])
UNION ALL
SELECT e.annotation_id, e.embedding FROM object_embeddings e
WHERE %(kind)s = 'object' AND e.model_id = %(model_id)s AND e.annotation_id = ANY (%(ids)s::bigint[]);
