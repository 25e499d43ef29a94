-- A collection's ranked items, in one statement. Arrays of equal length, rank 1 = best.
INSERT INTO collection_items (collection_id, rank, image_id, annotation_id, score)
SELECT %(collection_id)s, t.rank, t.image_id, t.annotation_id, t.score
FROM unnest(%(ranks)s::int[], %(image_ids)s::bigint[], %(annotation_ids)s::bigint[],
            %(scores)s::float8[]) AS t (rank, image_id, annotation_id, score);
