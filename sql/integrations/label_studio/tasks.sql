-- A Label Studio project's tasks with their data (read only), and the project's labeling config.
SELECT t.id, t.data, p.label_config
FROM {schema}.task t
JOIN {schema}.project p ON p.id = t.project_id
WHERE t.project_id = %(project)s
ORDER BY t.id;
