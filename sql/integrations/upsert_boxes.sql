-- A tool's boxes into visearch's annotations (COCO pixels), one row per (image, source,
-- external id). A box whose position or concept changed is updated; visearch's own trigger
-- (0001_queue_triggers.sql) re-queues it for embedding only if its pixels moved. Unchanged
-- boxes are not touched (no dead tuples, no re-embedding).
-- Returns (inserted, updated).
WITH incoming AS (
    SELECT *
    FROM unnest(%(image_ids)s::bigint[], %(concept_ids)s::bigint[], %(x)s::float8[], %(y)s::float8[],
                %(w)s::float8[], %(h)s::float8[], %(external_ids)s::text[], %(metadata)s::text[])
         AS t(image_id, concept_id, x, y, w, h, external_id, metadata)
), written AS (
    INSERT INTO annotations AS a (image_id, concept_id, bbox_x, bbox_y, bbox_w, bbox_h, source,
                                  external_id, metadata)
    SELECT image_id, concept_id, x, y, w, h, %(source)s, external_id, metadata::jsonb
    FROM incoming
    ON CONFLICT (image_id, source, external_id) DO UPDATE
        SET concept_id = EXCLUDED.concept_id,
            bbox_x = EXCLUDED.bbox_x, bbox_y = EXCLUDED.bbox_y,
            bbox_w = EXCLUDED.bbox_w, bbox_h = EXCLUDED.bbox_h,
            metadata = EXCLUDED.metadata, updated_at = now()
        WHERE (a.concept_id, a.bbox_x, a.bbox_y, a.bbox_w, a.bbox_h, a.metadata)
              IS DISTINCT FROM (EXCLUDED.concept_id, EXCLUDED.bbox_x, EXCLUDED.bbox_y,
                                EXCLUDED.bbox_w, EXCLUDED.bbox_h, EXCLUDED.metadata)
    RETURNING (xmax = 0) AS inserted   -- xmax is 0 for a new row version made by INSERT
)
SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM written;
