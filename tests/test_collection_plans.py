"""Plans of the collection statements Citus made us rewrite (``sql/collections/``), on one node:
the copy's "does the dataset have these bytes" check reads the (dataset_id, sha256) index, and
a page of a collection reads collection_items by its key."""

from __future__ import annotations

import psycopg

from visearch.resources import read_sql, sql_blocks


def _plan(db, statement: str, params: dict) -> str:
    with db.connect() as conn:
        # empty tables: a sequential scan costs nothing, so rule it out to see the index is usable
        conn.execute("SET enable_seqscan = off")
        return "\n".join(r[0] for r in psycopg.ClientCursor(conn).execute(
            "EXPLAIN " + statement, params))


def test_copy_checks_the_target_dataset_s_contents_through_its_dataset_sha256_index(db):
    plan = _plan(db, read_sql("collections/copy_images.sql"), {"collection_id": 1, "dataset_id": 2})
    # probed per content (dataset and sha256 in the index condition), not the whole dataset read
    assert "images_dataset_id_sha256_key" in plan and "Index Cond: ((dataset_id = 2) AND (sha256 = ANY" in plan, plan


def test_a_collection_page_reads_its_items_by_the_collection_key(db):
    plan = _plan(db, sql_blocks("collections/collection.sql")["items_page"],
                 {"collection_id": 1, "offset": 10, "limit": 5})
    assert "collection_items_pkey" in plan and "Seq Scan on collection_items" not in plan, plan


def test_the_exports_read_the_items_by_the_collection_key_and_images_and_boxes_by_image_id(db):
    """The exports read the collection's items first (Citus: the tables are not co-located),
    then each image by its key and its boxes through an index that starts with the image id."""
    images = _plan(db, read_sql("collections/export_images.sql"), {"collection_id": 1})
    assert "collection_items_pkey" in images and "images_pkey" in images, images
    for objects_only in (True, False):
        boxes = _plan(db, read_sql("collections/export_annotations.sql"),
                      {"collection_id": 1, "objects_only": objects_only})
        assert "collection_items_pkey" in boxes and "Seq Scan" not in boxes, boxes
        assert "Index Cond: (image_id = t.image_id)" in boxes, boxes
