-- Look-ups of the web console and of `visearch image find` (Alembic revision 0010).
--
-- A person looks an image up by its file name or by its id in the source system (the COCO
-- image id) without knowing its dataset: exact match or prefix (`LIKE 'x%'`). text_pattern_ops
-- lets a btree serve prefix LIKE whatever the database collation. The (dataset_id, external_id)
-- index of 0001 cannot: its leading column is the dataset.
CREATE INDEX images_file_name_pattern ON images (file_name text_pattern_ops);
CREATE INDEX images_external_id_pattern ON images (external_id text_pattern_ops);
-- `#concept` autocomplete: concepts whose tag starts with what was typed.
CREATE INDEX concepts_tag_pattern ON concepts (tag text_pattern_ops);
