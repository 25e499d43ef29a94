-- One image with its dataset, boxes and labels (for clients and annotation tools).
-- Columns are the fields of visearch.catalog.ImageDetail.
SELECT i.id, i.dataset_id, d.name AS dataset, i.width, i.height, i.format, i.file_name, i.source_uri,
       i.external_id, i.metadata, i.created_at, encode(i.sha256, 'hex') AS sha256,
       (c.image_id IS NOT NULL) AS has_bytes,
       coalesce((SELECT json_agg(json_build_object(
                    'id', a.id, 'bbox', json_build_array(a.bbox_x, a.bbox_y, a.bbox_w, a.bbox_h),
                    'concept', k.name, 'iscrowd', a.iscrowd, 'source', a.source, 'score', a.score)
                  ORDER BY a.id)
                 FROM annotations a LEFT JOIN concepts k ON k.id = a.concept_id
                 WHERE a.image_id = i.id), '[]'::json) AS annotations,
       coalesce((SELECT json_agg(json_build_object('concept', k.name, 'source', l.source, 'score', l.score)
                  ORDER BY k.name, l.source)
                 FROM image_labels l JOIN concepts k ON k.id = l.concept_id
                 WHERE l.image_id = i.id), '[]'::json) AS labels
FROM images i
JOIN datasets d ON d.id = i.dataset_id
LEFT JOIN image_content c ON c.image_id = i.id
WHERE i.id = %(image_id)s;
