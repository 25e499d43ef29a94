-- Object vectors carry their box's image id (Alembic revision 0014).
--
-- Why: on Citus every big table is distributed on the image id and co-located (see
-- sql/citus/distribute.sql); object_embeddings was keyed by annotation id only, so the object
-- ranking statement (vectors JOIN boxes JOIN images ... ORDER BY distance LIMIT k) joined tables
-- on different shards, which Citus refuses. With image_id in the row, object vectors are
-- distributed on it like everything else and the ranking stays inside each shard.
--
-- How it stays right on one node too: the key to the box is (annotation_id, image_id), a
-- foreign key to annotations (id, image_id) with ON UPDATE CASCADE, so a box moved to another
-- image moves its vectors' image_id with it, and a row whose image_id does not match its box is
-- rejected by the database. Writers that do not know the image id (a plain INSERT of
-- (model_id, annotation_id, embedding) from another tool) get it filled in by a BEFORE INSERT
-- trigger. visearch's own upsert (sql/vectors/upsert_object_embeddings.sql) gives it.
ALTER TABLE object_embeddings ADD COLUMN image_id bigint;
UPDATE object_embeddings e SET image_id = a.image_id FROM annotations a WHERE a.id = e.annotation_id;
ALTER TABLE object_embeddings ALTER COLUMN image_id SET NOT NULL;

ALTER TABLE annotations ADD CONSTRAINT annotations_id_image_id_key UNIQUE (id, image_id);
ALTER TABLE object_embeddings DROP CONSTRAINT object_embeddings_annotation_id_fkey;
ALTER TABLE object_embeddings ADD CONSTRAINT object_embeddings_annotation_fkey
    FOREIGN KEY (annotation_id, image_id) REFERENCES annotations (id, image_id)
    ON DELETE CASCADE ON UPDATE CASCADE;
-- The key names the image too (Citus needs the distribution column in it); (model_id,
-- annotation_id) stays unique: an annotation id has one image id (the foreign key above).
ALTER TABLE object_embeddings DROP CONSTRAINT object_embeddings_pkey;
ALTER TABLE object_embeddings ADD PRIMARY KEY (model_id, annotation_id, image_id);

CREATE FUNCTION object_embeddings_fill_image_id() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    SELECT a.image_id INTO NEW.image_id FROM annotations a WHERE a.id = NEW.annotation_id;
    RETURN NEW;  -- no such box: image_id stays NULL and the NOT NULL constraint says so
END $$;
CREATE TRIGGER object_embeddings_fill_image_id
    BEFORE INSERT ON object_embeddings
    FOR EACH ROW WHEN (NEW.image_id IS NULL) EXECUTE FUNCTION object_embeddings_fill_image_id();
