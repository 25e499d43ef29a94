-- How many boxes and images each concept has, per dataset (largest first).
SELECT d.name AS dataset, k.tag AS concept, count(*) AS boxes, count(DISTINCT a.image_id) AS images
FROM annotations a
JOIN images i ON i.id = a.image_id
JOIN datasets d ON d.id = i.dataset_id
JOIN concepts k ON k.id = a.concept_id
GROUP BY d.name, k.tag
ORDER BY boxes DESC, concept
LIMIT 20;
