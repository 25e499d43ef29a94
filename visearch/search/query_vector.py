"""Turning a search request into its query vector (float32, unit L2 norm, the model's dim).

- text: the model's text tower (CLIP-style models only);
- an uploaded image, optionally cropped to a box with the same rule as stored boxes
  (:func:`visearch.embedding.crop_box`): the model's image tower;
- stored image ids: their stored vectors; several ids give the mean of the unit vectors,
  renormalised ("more like this selection");
- an annotation id: the box's stored vector;
- only ``#concepts``: the centroid of the items carrying them (within the filters), each image
  weighing the same and boxes under 32 x 32 px left out (``concept_centroid`` in
  ``sql/search/statements.sql``), so the concept's items rank by how typical they look.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import psycopg

from visearch.config import Settings
from visearch.db.models import ModelRow
from visearch.errors import InvalidRequestError, NotEmbeddedError, NotFoundError


@dataclass(frozen=True)
class QueryVector:
    vector: np.ndarray | None  # (dim,) float32, unit norm; None: read by the ranking statement
    source: str  # text | image | image_ids | annotation | concepts


def _unit(v) -> np.ndarray:
    """``v`` (ndarray, list or pgvector ``Vector``) scaled to unit L2 norm, as float32."""
    v = np.asarray(v.to_numpy() if hasattr(v, "to_numpy") else v, dtype=np.float32)
    norm = float(np.linalg.norm(v))
    if not np.isfinite(norm) or norm == 0:
        raise InvalidRequestError("the query vector is zero (opposite vectors averaged out)")
    return v / norm


def resolve_query_vector(
    conn: psycopg.Connection,
    model: ModelRow,
    kind: str,
    req,
    *,
    text: str | None,
    shape,
    settings: Settings,
    stored: list | None = None,
    in_statement: bool = False,
) -> QueryVector:
    """The query vector of ``req`` (a :class:`~visearch.search.service.SearchRequest`);
    ``shape`` (:class:`visearch.search.statements.Shape`) holds its resolved filters.

    Raises:
        InvalidRequestError: no or several query sources; text on an image-only model; an
            undecodable image or invalid crop box.
        NotFoundError: unknown image or annotation id.
        NotEmbeddedError: the item exists but has no vector for this model yet.

    ``stored``: the vectors of several ``req.image_ids`` already read (the search context
    statement reads them with the rest); None reads them here. ``in_statement``: a search by one
    stored image or box that has a vector, which the ranking statement reads itself
    (``Shape.query_from``): the returned ``vector`` is None.
    """
    sources = [
        name
        for name, given in (
            ("text", text),
            ("image", req.image is not None),
            ("image_ids", bool(req.image_ids)),
            ("annotation", req.annotation_id is not None),
            ("vector", req.vector is not None),
        )
        if given
    ]
    if len(sources) > 1:
        raise InvalidRequestError(f"give one query source, not {' and '.join(sources)}")
    source = sources[0] if sources else "concepts"
    if source == "text":
        return QueryVector(_embed_text(model, text, settings), source)
    if source == "image":
        return QueryVector(_embed_upload(model, req.image, req.crop_xywh, settings), source)
    if source in ("image_ids", "annotation") and in_statement:
        return QueryVector(None, source)
    if source in ("image_ids", "annotation") and stored:
        return QueryVector(_unit(np.mean([_unit(v) for v in stored], axis=0)), source)
    if source == "image_ids":
        return QueryVector(_stored_image_vectors(conn, model, list(req.image_ids)), source)
    if source == "annotation":
        return QueryVector(_stored_object_vector(conn, model, req.annotation_id), source)
    if source == "vector":
        if len(req.vector) != model.dim:
            raise InvalidRequestError(f"the query vector has {len(req.vector)} dimensions; {model.name} has {model.dim}")
        return QueryVector(_unit(req.vector), source)
    if not shape.params["concept_ids"]:
        raise InvalidRequestError(
            "nothing to search for: give text, an image, image ids, an annotation id or #concepts"
        )
    centroid, count = conn.execute(shape.centroid(), shape.params).fetchone()
    if not count and shape.params.get("min_box_area"):  # only small boxes: use them after all
        centroid, count = conn.execute(shape.centroid(), {**shape.params, "min_box_area": None}).fetchone()
    if not count:
        raise _no_concept_items(conn, model, shape.params["concept_ids"])
    return QueryVector(_unit(centroid), source)


def _no_concept_items(conn: psycopg.Connection, model: ModelRow, concept_ids: list[int]) -> Exception:
    """Why a #concept search had nothing to average: no image shows the concepts together, or
    none within the filters, or their items have no vector yet."""
    tags = " ".join("#" + r[0] for r in conn.execute(
        "SELECT tag FROM concepts WHERE id = ANY(%s) ORDER BY array_position(%s, id)", (concept_ids, concept_ids)))
    together = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM (SELECT image_id, concept_id FROM annotations WHERE concept_id = ANY(%(c)s)"
        " UNION SELECT image_id, concept_id FROM image_labels WHERE concept_id = ANY(%(c)s)) t"
        " GROUP BY image_id HAVING count(*) = cardinality(%(c)s::bigint[]))",
        {"c": concept_ids},
    ).fetchone()[0]
    if not together:
        if len(concept_ids) > 1:
            return NotFoundError(f"no image shows {tags} together")
        return NotFoundError(f"no image or box carries {tags}")
    return NotEmbeddedError(
        f"no item with {tags} within the filters has a {model.name} vector: widen the filters, "
        "or wait for (or run) the embedding of those datasets"
    )


def _load(model: ModelRow, settings: Settings):
    from visearch.embedding import load_model

    return load_model(model.name, device=settings.device)


def _embed_text(model: ModelRow, text: str, settings: Settings) -> np.ndarray:
    if not model.embeds_text:
        raise InvalidRequestError(
            f"model {model.name!r} is image-only: text search needs a model with a text tower, "
            "e.g. --model openclip (embed the dataset with it first)"
        )
    return _unit(_load(model, settings).embed_texts([text])[0])


def _embed_upload(model: ModelRow, data: bytes, crop_xywh, settings: Settings) -> np.ndarray:
    from visearch.embedding import crop_box
    from visearch.embedding.decode import ImageDecodeError, decode_image

    try:
        image = decode_image(data, max_pixels=settings.max_image_pixels)
    except ImageDecodeError as exc:
        raise InvalidRequestError(f"query image: {exc}") from exc
    if crop_xywh is not None:
        try:
            image = crop_box(image, tuple(float(v) for v in crop_xywh))
        except ValueError as exc:
            raise InvalidRequestError(f"crop box: {exc}") from exc
    return _unit(_load(model, settings).embed_images([image])[0])


def _stored_image_vectors(conn, model: ModelRow, image_ids: list[int]) -> np.ndarray:
    rows = conn.execute(
        "SELECT i.id, e.embedding FROM images i"
        " LEFT JOIN image_embeddings e ON e.image_id = i.id AND e.model_id = %s"
        " WHERE i.id = ANY(%s)",
        (model.id, image_ids),
    ).fetchall()
    found = {image_id: vec for image_id, vec in rows}
    unknown = [i for i in image_ids if i not in found]
    if unknown:
        raise NotFoundError(f"unknown image id(s): {', '.join(map(str, unknown))}")
    pending = [i for i in image_ids if found[i] is None]
    if pending:
        raise NotEmbeddedError(
            f"image(s) {', '.join(map(str, pending))} have no {model.name} vector yet "
            "(queued for embedding, or failed: see `visearch status`)"
        )
    return _unit(np.mean([_unit(found[i]) for i in dict.fromkeys(image_ids)], axis=0))


def _stored_object_vector(conn, model: ModelRow, annotation_id: int) -> np.ndarray:
    row = conn.execute(
        "SELECT a.id, e.embedding FROM annotations a"
        " LEFT JOIN object_embeddings e ON e.annotation_id = a.id AND e.image_id = a.image_id AND e.model_id = %s"
        " WHERE a.id = %s",
        (model.id, annotation_id),
    ).fetchone()
    if row is None:
        raise NotFoundError(f"unknown annotation id {annotation_id}")
    if row[1] is None:
        raise NotEmbeddedError(
            f"annotation {annotation_id} has no {model.name} vector yet "
            "(queued for embedding, or failed: see `visearch status`)"
        )
    return _unit(row[1])
