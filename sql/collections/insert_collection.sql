-- A new collection row (temporary unless %(name)s is given). The caller has already deleted
-- the owner's previous temporary collection in the same transaction, under the owner's lock.
INSERT INTO collections (owner, name, saved, saved_at, mode, model, query, exact, candidates, note, histogram)
VALUES (%(owner)s, %(name)s, %(name)s::text IS NOT NULL,
        CASE WHEN %(name)s::text IS NOT NULL THEN now() END,
        %(mode)s, %(model)s, %(query)s, %(exact)s, %(candidates)s, %(note)s, %(histogram)s)
RETURNING id;
