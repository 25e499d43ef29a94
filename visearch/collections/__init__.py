"""Collections: search results kept in the database for paging, tagging and copying.

Public API: :func:`search_to_collection` (what ``POST /v1/search`` does), :func:`record_search`, :func:`list_collections`, :func:`get_collection`,
:func:`collection_items`, :func:`save_collection`, :func:`delete_collection`,
:func:`tag_images`, :func:`untag_images`, :func:`copy_images`, :func:`remove_items`;
exports in :mod:`visearch.collections.export`.
"""

from visearch.collections.service import (
    COLLECTION_LABEL_SOURCE,
    Collection,
    CollectionItem,
    CopyReport,
    TagReport,
    collection_items,
    copy_images,
    delete_collection,
    get_collection,
    list_collections,
    record_search,
    remove_items,
    save_collection,
    search_to_collection,
    tag_images,
    untag_images,
)

__all__ = [
    "COLLECTION_LABEL_SOURCE",
    "Collection",
    "CollectionItem",
    "CopyReport",
    "TagReport",
    "collection_items",
    "copy_images",
    "delete_collection",
    "get_collection",
    "list_collections",
    "record_search",
    "remove_items",
    "save_collection",
    "search_to_collection",
    "tag_images",
    "untag_images",
]
