-- Per dataset and model: images and boxes, how many have vectors, and how many wait in the queue.
SELECT d.name AS dataset, m.name AS model,
       (SELECT count(*) FROM images i WHERE i.dataset_id = d.id) AS images,
       (SELECT count(*) FROM image_embeddings e JOIN images i ON i.id = e.image_id
         WHERE i.dataset_id = d.id AND e.model_id = m.id) AS images_embedded,
       (SELECT count(*) FROM annotations a JOIN images i ON i.id = a.image_id
         WHERE i.dataset_id = d.id) AS boxes,
       (SELECT count(*) FROM object_embeddings e JOIN annotations a ON a.id = e.annotation_id
         JOIN images i ON i.id = a.image_id WHERE i.dataset_id = d.id AND e.model_id = m.id) AS boxes_embedded,
       (SELECT count(*) FROM embedding_queue q WHERE q.dataset_id = d.id AND q.model_id = m.id) AS queued
FROM datasets d CROSS JOIN embedding_models m
ORDER BY d.name, m.name;
