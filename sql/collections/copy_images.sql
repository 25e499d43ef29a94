-- Copy a collection's images into dataset %(dataset_id)s: new `images` rows with the same
-- sha256, size, format, source, file name, external id and metadata, and their original bytes
-- (a copy of the same bytes in image_content). Images whose bytes the target dataset already
-- has are left alone. The images_enqueue trigger queues every new row for embedding by each
-- active model.
-- One image per (dataset, sha256), the ingest writer's rule: the caller holds the dataset's
-- advisory lock (visearch.ingest.writer.lock_dataset_images) and this statement inserts only the
-- sha256s the dataset does not have (the anti-join on the (dataset_id, sha256) index), not
-- ON CONFLICT (dataset_id, sha256): on Citus that unique index cannot exist (it lacks the image
-- id, the distribution column). On one node the constraint stays as a second guard.
-- Returns (source image id, new image id) for each distinct content of the collection; new
-- image id NULL where the dataset already had those bytes.
WITH source AS MATERIALIZED (
    -- one source row per distinct content: two collection images with the same bytes (from
    -- different datasets) become one image in the target
    SELECT DISTINCT ON (i.sha256) i.*
    FROM images i
    WHERE i.id IN (SELECT ci.image_id FROM collection_items ci WHERE ci.collection_id = %(collection_id)s)
    ORDER BY i.sha256, i.id
),
copied AS (
    INSERT INTO images (dataset_id, sha256, width, height, format, source_uri, file_name,
                        external_id, metadata)
    SELECT %(dataset_id)s, s.sha256, s.width, s.height, s.format, s.source_uri, s.file_name,
           s.external_id, s.metadata
    FROM source s
    WHERE s.sha256 NOT IN (SELECT t.sha256 FROM images t  -- probes of the index, per content
                           WHERE t.dataset_id = %(dataset_id)s AND t.sha256 = ANY (ARRAY(SELECT sha256 FROM source)))
    ON CONFLICT DO NOTHING
    RETURNING id, sha256
),
content AS (
    INSERT INTO image_content (image_id, content)
    SELECT c.id, ic.content
    FROM copied c
    JOIN source s ON s.sha256 = c.sha256
    JOIN image_content ic ON ic.image_id = s.id
    RETURNING image_id
)
SELECT s.id AS source_id, c.id AS new_id
FROM source s
LEFT JOIN copied c ON c.sha256 = s.sha256
ORDER BY s.id;
