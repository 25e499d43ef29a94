-- Link tool tasks to visearch images (pairs of equal-length arrays); tasks whose image does not
-- exist are left out. Returns the tasks linked by this statement.
INSERT INTO tool_tasks (tool, project_id, task_id, image_id)
SELECT %(tool)s, %(project)s, t.task_id, t.image_id
FROM unnest(%(task_ids)s::bigint[], %(image_ids)s::bigint[]) AS t(task_id, image_id)
JOIN images i ON i.id = t.image_id
ON CONFLICT (tool, task_id) DO NOTHING
RETURNING task_id;
