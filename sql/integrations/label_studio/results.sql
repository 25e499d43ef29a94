-- The current results of a Label Studio project's annotations on tasks linked to visearch
-- images (read only): one row per rectanglelabels or choices result, with the image's size in
-- pixels. Skipped (cancelled) annotations and drafts (another table) are not results.
SELECT c.id AS annotation_id, c.task_id, tt.image_id, i.width, i.height, r.value AS result, r.n
FROM tool_tasks tt
JOIN {schema}.task_completion c ON c.task_id = tt.task_id
JOIN images i ON i.id = tt.image_id
CROSS JOIN LATERAL jsonb_array_elements(
    CASE jsonb_typeof(c.result::jsonb) WHEN 'array' THEN c.result::jsonb ELSE '[]'::jsonb END
) WITH ORDINALITY AS r(value, n)
WHERE tt.tool = 'label-studio'
  AND tt.project_id = %(project)s
  AND NOT c.was_cancelled
  AND r.value ->> 'type' IN ('rectanglelabels', 'choices')
ORDER BY c.id, r.n;
