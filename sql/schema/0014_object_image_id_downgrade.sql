-- Undo revision 0014: object vectors keyed by annotation id alone again.
DROP TRIGGER object_embeddings_fill_image_id ON object_embeddings;
DROP FUNCTION object_embeddings_fill_image_id();
ALTER TABLE object_embeddings DROP CONSTRAINT object_embeddings_pkey;
ALTER TABLE object_embeddings ADD PRIMARY KEY (model_id, annotation_id);
ALTER TABLE object_embeddings DROP CONSTRAINT object_embeddings_annotation_fkey;
ALTER TABLE object_embeddings ADD CONSTRAINT object_embeddings_annotation_id_fkey
    FOREIGN KEY (annotation_id) REFERENCES annotations (id) ON DELETE CASCADE;
ALTER TABLE annotations DROP CONSTRAINT annotations_id_image_id_key;
ALTER TABLE object_embeddings DROP COLUMN image_id;
