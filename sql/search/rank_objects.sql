-- Objects (annotation boxes) ranked by cosine similarity to a query vector, one statement.
-- Template as rank_images.sql; `e` is object_embeddings and {source} also joins the box as `a`.
WITH ranked AS MATERIALIZED (
    SELECT e.annotation_id, {distance} AS distance
    FROM {source}
    WHERE e.model_id = %(model_id)s
      AND {filters}
    ORDER BY {distance}
    LIMIT %(limit)s
)
SELECT r.annotation_id, 1 - r.distance AS score, a.image_id, i.dataset_id, d.name AS dataset,
       i.file_name, a.bbox_x, a.bbox_y, a.bbox_w, a.bbox_h, k.name AS concept, a.iscrowd,
       a.source, a.score AS annotation_score
FROM ranked r
JOIN annotations a ON a.id = r.annotation_id
JOIN images i ON i.id = a.image_id
JOIN datasets d ON d.id = i.dataset_id
LEFT JOIN concepts k ON k.id = a.concept_id
ORDER BY r.distance, r.annotation_id
