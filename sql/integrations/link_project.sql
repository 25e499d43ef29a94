-- Link a tool project to the dataset its new tasks' images go to (re-linking moves only that).
INSERT INTO tool_projects (tool, project_id, tool_schema, dataset_id)
VALUES (%(tool)s, %(project)s, %(schema)s, %(dataset_id)s)
ON CONFLICT (tool, project_id) DO UPDATE
    SET tool_schema = EXCLUDED.tool_schema, dataset_id = EXCLUDED.dataset_id;
