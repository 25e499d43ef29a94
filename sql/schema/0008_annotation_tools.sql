-- Annotation tools linked to visearch (Alembic revision 0008): which tool project feeds which
-- dataset, and which of the tool's tasks is which visearch image.
--
-- The tool's own tables are never written by visearch. For Label Studio on the same database
-- (its tables in their own schema, `label_studio` by default), `visearch connect label-studio`
-- adds AFTER ROW triggers on its `task` and `task_completion` tables that only call
-- pg_notify('visearch_annotation_tool', '<tool>:<project id>') (see
-- sql/integrations/label_studio/install_triggers.sql): they cannot change or veto the tool's
-- rows, and a rolled-back change notifies nothing. The sync then reads the tool's rows and
-- writes visearch's own tables (images, annotations, image_labels), whose triggers queue the
-- changed boxes for embedding as for any other client.

CREATE TABLE tool_projects (
    tool         text NOT NULL CHECK (tool IN ('label-studio')),   -- one value per adapter
    project_id   bigint NOT NULL,                 -- the tool's project id
    tool_schema  text NOT NULL,                   -- the PostgreSQL schema of the tool's tables
    dataset_id   bigint NOT NULL REFERENCES datasets (id) ON DELETE CASCADE,  -- new tasks' images go here
    synced_at    timestamptz,                     -- end of the last sync
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tool, project_id)
);

-- A tool task is one visearch image: imported from the task's file, or, for tasks that
-- visearch created (`collections send`), the image they were made from.
CREATE TABLE tool_tasks (
    tool        text NOT NULL,
    project_id  bigint NOT NULL,
    task_id     bigint NOT NULL,
    image_id    bigint NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    PRIMARY KEY (tool, task_id),
    FOREIGN KEY (tool, project_id) REFERENCES tool_projects (tool, project_id) ON DELETE CASCADE
);
CREATE INDEX tool_tasks_project ON tool_tasks (tool, project_id);
CREATE INDEX tool_tasks_image ON tool_tasks (image_id);

-- What the last sync of a project could not take (a task whose file is outside the media
-- roots, a rotated box, a box outside its image), and why. Replaced by every sync.
CREATE TABLE tool_sync_rejects (
    tool        text NOT NULL,
    project_id  bigint NOT NULL,
    task_id     bigint,
    reason      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (tool, project_id) REFERENCES tool_projects (tool, project_id) ON DELETE CASCADE
);
CREATE INDEX tool_sync_rejects_project ON tool_sync_rejects (tool, project_id);
