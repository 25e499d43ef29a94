"""Near-duplicate groups: connected components over HNSW neighbour pairs, never all pairs.

Each item's k nearest neighbours are looked up once through the model's HNSW index when its
vector is written (``refresh_neighbour_edges`` in ``sql/schema/0007_curation.sql``; the
embedding worker calls :func:`refresh_neighbours` after each run) and the pairs with cosine
similarity >= :data:`EDGE_FLOOR` are kept in ``neighbour_edges``. A duplicates query keeps the
pairs at or above its threshold and joins them into groups (connected components,
``scipy.sparse.csgraph.connected_components``): a re-encode, a resize, a crop and a flip of one
photo form one group even when not every pair among them is above the threshold.

Each group suggests a keeper: the item with the most pixels (images: width x height; objects:
box area), then the oldest (``images.created_at``), then the lowest id. Byte-identical images
(the same sha256 in several datasets) are listed separately; they need no vectors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import psycopg

from visearch.config import Settings, get_settings
from visearch.curation.search_seam import filtered_candidates
from visearch.db.database import Database
from visearch.errors import InvalidRequestError
from visearch.resources import read_sql

#: default cosine similarity above which two items are near-duplicates: with efficientnet-lite0
#: on 208 coco photos, 0.90 groups 94-100% of JPEG q=60, 0.5x, 90%-crop and flipped copies with
#: their original at pairwise precision 0.99; 0.95 finds 23-84% (bench/bench_curation.py)
DEFAULT_THRESHOLD = 0.90
#: neighbours looked up per item, and the lowest similarity kept (thresholds go down to it)
EDGE_K = 10
EDGE_FLOOR = 0.8


@dataclass
class DuplicateMember:
    item_id: int  # image id, or annotation id for objects
    image_id: int
    dataset: str
    file_name: str | None
    width: int  # pixels (objects: the box's)
    height: int
    created_at: datetime
    concept: str | None = None  # objects
    similarity: float | None = None  # the strongest edge linking it to the group


@dataclass
class DuplicateGroup:
    keeper: int  # item id suggested to keep
    members: list[DuplicateMember]  # keeper first, then by similarity


@dataclass
class ExactDuplicate:
    sha256: str  # hex
    images: list[DuplicateMember]  # oldest first


@dataclass
class DuplicateReport:
    dataset: str
    mode: str  # images | objects
    model: str
    threshold: float
    groups: list[DuplicateGroup]  # largest first
    exact: list[ExactDuplicate] = field(default_factory=list)
    refreshed: int = 0  # items whose neighbours were looked up for this answer


def refresh_neighbours(conn: psycopg.Connection, model_id: int, kinds=("image", "object"), *,
                       k: int = EDGE_K, floor: float = EDGE_FLOOR, batch: int = 5000,
                       until: Callable[[], bool] | None = None) -> int:
    """Look up the neighbours of every vector written since the last refresh (through the HNSW
    index; nothing while a kind has no index yet) and keep the pairs >= ``floor``. Commits after
    each batch of ``batch`` items; returns how many items were processed. ``until`` is asked
    after each batch: True stops early (the rest stays pending for the next refresh)."""
    done = 0
    for kind in kinds:
        while True:
            with conn.transaction():
                n = conn.execute("SELECT refresh_neighbour_edges(%s, %s, %s, %s, %s)",
                                 (model_id, kind, k, floor, batch)).fetchone()[0]
            done += n
            if until is not None and until():
                return done
            if n < batch:
                break
    return done


def connected_groups(pairs: np.ndarray) -> list[np.ndarray]:
    """Connected components of an undirected graph given by its edges.

    Args:
        pairs: (E, 2) int64 item ids.

    Returns:
        The item ids of each component with at least two items, largest component first.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if len(pairs) == 0:
        return []
    nodes, inverse = np.unique(pairs.ravel(), return_inverse=True)
    inverse = inverse.reshape(-1, 2)
    graph = coo_matrix((np.ones(len(pairs)), (inverse[:, 0], inverse[:, 1])), shape=(len(nodes),) * 2)
    count, labels = connected_components(graph, directed=False)
    # one stable sort by component (ids stay ascending within each), not a scan of every node
    # per component: quadratic when the pairs form thousands of small groups
    order = np.argsort(labels, kind="stable")
    groups = np.split(nodes[order], np.cumsum(np.bincount(labels, minlength=count))[:-1])
    return sorted((g for g in groups if len(g) > 1), key=lambda g: (-len(g), int(g.min())))


def find_duplicates(
    db: Database, dataset: str, *, threshold: float = DEFAULT_THRESHOLD, objects: bool = False,
    model: str | None = None, settings: Settings | None = None,
) -> DuplicateReport:
    """Near-duplicate groups (and byte-identical images) of ``dataset``.

    Args:
        threshold: cosine similarity in [EDGE_FLOOR, 1]: pairs at or above it are linked.
        objects: boxes instead of images.
        model: the embedding model (default: the serving model of the dataset).

    Raises:
        InvalidRequestError: threshold out of range; the dataset has AI search disabled.
        NotFoundError: unknown dataset or model.
    """
    from visearch.search import SearchRequest

    settings = settings or get_settings()
    if not EDGE_FLOOR <= threshold <= 1.0:
        raise InvalidRequestError(
            f"threshold is a cosine similarity in [{EDGE_FLOOR}, 1] (pairs below {EDGE_FLOOR} "
            f"are not kept), not {threshold}")
    mode = "objects" if objects else "images"
    kind = "object" if objects else "image"
    with db.connect(autocommit=True) as conn:
        cands = filtered_candidates(conn, SearchRequest(mode=mode, datasets=(dataset,), model=model), settings)
        dataset_id = cands.params["dataset_ids"][0]
        refreshed = refresh_neighbours(conn, cands.model.id, (kind,))
        pairs = conn.execute(
            read_sql("curation/duplicate_edges.sql"),
            {"model_id": cands.model.id, "kind": kind, "threshold": threshold, "dataset_id": dataset_id},
        ).fetchall()
        components = connected_groups(np.asarray([(a, b) for a, b, _ in pairs], dtype=np.int64).reshape(-1, 2))
        strongest: dict[int, float] = {}
        for a, b, s in pairs:
            strongest[a] = max(strongest.get(a, -1.0), float(s))
            strongest[b] = max(strongest.get(b, -1.0), float(s))
        ids = [int(i) for g in components for i in g]
        rows = conn.execute(read_sql("curation/duplicate_members.sql"), {"ids": ids, "kind": kind}).fetchall()
        exact_rows = [] if objects else conn.execute(
            read_sql("curation/exact_duplicates.sql"), {"dataset_id": dataset_id}).fetchall()
    info = {r[0]: r for r in rows}
    groups = []
    for component in components:
        members = [info[int(i)] for i in component if int(i) in info]
        if len(members) < 2:
            continue
        # keeper: most pixels, then oldest, then lowest id
        members.sort(key=lambda r: (-r[2], r[3], r[0]))
        keeper = members[0][0]
        out = [DuplicateMember(item_id=r[0], image_id=r[1], dataset=r[4], file_name=r[5], width=r[6],
                               height=r[7], created_at=r[3], concept=r[8], similarity=strongest.get(r[0]))
               for r in members]
        out[1:] = sorted(out[1:], key=lambda m: (-(m.similarity or 0.0), m.item_id))
        groups.append(DuplicateGroup(keeper=keeper, members=out))
    exact: dict[str, ExactDuplicate] = {}
    for sha, image_id, ds, file_name, w, h, created in exact_rows:
        exact.setdefault(sha, ExactDuplicate(sha256=sha, images=[])).images.append(
            DuplicateMember(item_id=image_id, image_id=image_id, dataset=ds, file_name=file_name,
                            width=w, height=h, created_at=created, similarity=1.0))
    return DuplicateReport(dataset=dataset, mode=mode, model=cands.model.name, threshold=threshold,
                           groups=groups, exact=list(exact.values()), refreshed=refreshed)
