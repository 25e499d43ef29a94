-- Boxes a tool project no longer has (annotation or result deleted in the tool, task deleted):
-- every box from this source and project on the project's images whose external id is not
-- among the current ones. Their vectors and queue rows go with them (foreign keys, triggers).
DELETE FROM annotations a
WHERE a.image_id = ANY(%(image_ids)s::bigint[])
  AND a.source = %(source)s
  AND a.metadata ->> 'tool_project' = %(project)s
  AND NOT (a.external_id = ANY(%(keep)s::text[]))
RETURNING a.id;
