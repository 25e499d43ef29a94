-- Copy a collection's images into dataset %(dataset_id)s: new `images` rows with the same
-- sha256, size, format, source, file name, external id and metadata, and their original bytes
-- (a copy of the same bytes in image_content). Images whose bytes the target dataset already
-- has are left alone (UNIQUE (dataset_id, sha256)). The images_enqueue trigger queues every
-- new row for embedding by each active model.
-- Returns (source image id, new image id) for each image really copied.
WITH source AS (
    -- one source row per distinct content: two collection images with the same bytes (from
    -- different datasets) become one image in the target
    SELECT DISTINCT ON (i.sha256) i.*
    FROM collection_items ci
    JOIN images i ON i.id = ci.image_id
    WHERE ci.collection_id = %(collection_id)s
    ORDER BY i.sha256, i.id
),
copied AS (
    INSERT INTO images (dataset_id, sha256, width, height, format, source_uri, file_name,
                        external_id, metadata)
    SELECT %(dataset_id)s, s.sha256, s.width, s.height, s.format, s.source_uri, s.file_name,
           s.external_id, s.metadata
    FROM source s
    ON CONFLICT (dataset_id, sha256) DO NOTHING
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
FROM copied c
JOIN source s ON s.sha256 = c.sha256
ORDER BY s.id;
