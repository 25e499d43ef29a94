-- What deleting dataset %(dataset_id)s removes (ON DELETE CASCADE from datasets): its images
-- (and their bytes, labels, captions, boxes), their vectors for every model, its queue rows,
-- and the collection items that pointed at its images.
SELECT (SELECT count(*) FROM images i WHERE i.dataset_id = %(dataset_id)s) AS images,
       (SELECT count(*) FROM annotations a JOIN images i ON i.id = a.image_id
         WHERE i.dataset_id = %(dataset_id)s) AS annotations,
       (SELECT count(*) FROM image_embeddings e JOIN images i ON i.id = e.image_id
         WHERE i.dataset_id = %(dataset_id)s)
     + (SELECT count(*) FROM object_embeddings e JOIN annotations a ON a.id = e.annotation_id
         JOIN images i ON i.id = a.image_id WHERE i.dataset_id = %(dataset_id)s) AS vectors,
       (SELECT count(*) FROM embedding_queue q WHERE q.dataset_id = %(dataset_id)s) AS queue_rows,
       (SELECT count(*) FROM collection_items ci JOIN images i ON i.id = ci.image_id
         WHERE i.dataset_id = %(dataset_id)s) AS collection_items;
