"""Media roots: the folders reference-only images may be read from.

An ``images`` row ingested with ``--reference-only`` has no bytes in the database, only a
``source_uri``; anyone who may write that table (annotation tools are invited to) could point
it at any file on the server (``file:///etc/shadow``). So files are served (original,
thumbnail, crop) and read by the embedder (:mod:`visearch.embed`; the item fails with the
reason instead) only when their path, with every symlink resolved, lies inside a media root:

* ``VISEARCH_MEDIA_ROOTS`` (folders separated by ``os.pathsep``, ``:`` on Linux) when set;
* otherwise the folders visearch has ingested from (table ``media_roots``, written by
  ``visearch ingest``).

Images whose bytes are stored in the database are not affected. ``source_uri`` <-> path:
:func:`source_uri`, :func:`path_from_source_uri` (byte-exact for names that are not UTF-8).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence
from urllib.parse import unquote_to_bytes, urlparse

import psycopg

from visearch.errors import ForbiddenError

log = logging.getLogger(__name__)


def source_uri(path: Path) -> str:
    """The ``images.source_uri`` of a local file: an absolute ``file://`` URI.

    Absolute but not symlink-resolved (what the user pointed at), percent-encoded by
    :meth:`pathlib.Path.as_uri` from the name's bytes, so names that are not UTF-8 are kept
    exactly. Turn it back into a path with :func:`path_from_source_uri`.
    """
    return Path(os.path.abspath(path)).as_uri()


def path_from_source_uri(uri: str) -> Path:
    """The local path of a ``file://`` source URI (inverse of :func:`source_uri`).

    Raises:
        ValueError: ``uri`` is not a ``file://`` URI.
    """
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        raise ValueError(f"not a file:// URI: {uri!r}")
    return Path(os.fsdecode(unquote_to_bytes(parsed.path)))


def record_media_root(conn: psycopg.Connection, folder: Path) -> None:
    """Remember ``folder`` (symlinks resolved) as a media root; called by ingest."""
    text = os.fsdecode(Path(folder).resolve())
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a folder whose own name is not UTF-8: set VISEARCH_MEDIA_ROOTS
        log.warning("media root %r is not UTF-8 and is not recorded; list it in VISEARCH_MEDIA_ROOTS", text)
        return
    conn.execute("INSERT INTO media_roots (path) VALUES (%s) ON CONFLICT DO NOTHING", (text,))


def media_roots(conn: psycopg.Connection, configured: Sequence[Path] = ()) -> list[Path]:
    """The roots in force: ``configured`` (``Settings.media_roots``) if any, else the ingested folders."""
    if configured:
        return [Path(p).resolve() for p in configured]
    return [Path(r[0]) for r in conn.execute("SELECT path FROM media_roots ORDER BY path")]


def resolve_media_path(uri: str, roots: Sequence[Path]) -> Path:
    """The file of a reference-only image, if it lies inside a media root; the one check that
    serving and the embedder both make before reading a ``source_uri``.

    Args:
        uri: ``images.source_uri`` (a ``file://`` URI).
        roots: resolved folders (:func:`media_roots`).

    Returns:
        The path with every symlink resolved (the caller reads that one, not the link).

    Raises:
        ForbiddenError: not a ``file://`` URI, or outside every root once symlinks are resolved.
        FileNotFoundError: inside a root but gone.
    """
    try:
        path = path_from_source_uri(uri)
    except ValueError as exc:
        raise ForbiddenError(f"only file:// sources inside the media roots are read: {exc}") from exc
    real = Path(os.path.realpath(path))
    if not any(real == root or real.is_relative_to(root) for root in roots):
        raise ForbiddenError(
            "the image's file is outside the media roots (VISEARCH_MEDIA_ROOTS, default: the folders "
            "ingested from), so it is neither served nor embedded"
        )
    if not real.is_file():
        raise FileNotFoundError(f"no such file: {uri}")
    return real
