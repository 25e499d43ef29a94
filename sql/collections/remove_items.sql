-- Remove items from collection %(collection_id)s by rank (the others keep their ranks, so the
-- order never changes). Returns the ranks removed.
DELETE FROM collection_items
WHERE collection_id = %(collection_id)s AND rank = ANY(%(ranks)s::int[])
RETURNING rank;
