-- What a result table shows of each box in %(ids)s (bigint[]): its image, dataset, file, concept, bbox.
SELECT a.id, a.image_id, d.name, i.file_name, k.name, a.bbox_x, a.bbox_y, a.bbox_w, a.bbox_h
FROM annotations a
JOIN images i ON i.id = a.image_id
JOIN datasets d ON d.id = i.dataset_id
LEFT JOIN concepts k ON k.id = a.concept_id
WHERE a.id = ANY (%(ids)s::bigint[]);
