"""Finding image files, and reading + hashing + fully decoding them in a thread pool.

The expensive part of ingest (read, sha256, decode) runs here, in worker threads: Pillow's
decoders and hashlib release the GIL, so threads scale without pickling bytes to processes.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

from visearch.embedding.decode import ImageDecodeError, decode_image, probe_image

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


def source_uri(path: Path) -> str:
    """The ``images.source_uri`` of a local file: an absolute ``file://`` URI.

    Absolute but not symlink-resolved (what the user pointed at), percent-encoded by
    :meth:`pathlib.Path.as_uri`. Turn it back into a path with :func:`path_from_source_uri`.
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
    return Path(url2pathname(unquote(parsed.path)))


def list_files(folder: Path) -> list[Path]:
    """Every regular file under ``folder``, recursively, sorted for a reproducible order.

    Hidden files and folders (name starting with ".") are left out: they are OS or tool litter
    (.DS_Store, .ipynb_checkpoints), never a user's images. Everything else is returned whatever
    its extension, so that a non-image file is reported as skipped rather than silently ignored.
    Symlinked files are followed; symlinked folders are not (no cycles).

    Raises:
        FileNotFoundError: ``folder`` does not exist. NotADirectoryError: it is a file.
    """
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"folder not found: {folder}")
    if not folder.is_dir():
        raise NotADirectoryError(f"not a folder: {folder}")
    found: list[Path] = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.startswith("."):
                continue
            path = Path(root, name)
            if path.is_file():  # follows file symlinks; drops broken links, sockets, fifos
                found.append(path)
    found.sort()
    return found


@dataclass
class LoadedFile:
    """One file after reading (and, unless already known, decoding).

    ``data`` is the original bytes; ``width``/``height`` are pixels after EXIF orientation and
    ``format`` is Pillow's name -- all three are None when ``known`` (its sha256 was already in
    the dataset, so it was not decoded again). ``reason`` is set (and the rest unset) when the
    file cannot be ingested; it reads "<kind>: <details>".
    """

    path: Path
    uri: str
    data: bytes | None = None
    sha256: bytes | None = None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    known: bool = False
    reason: str | None = None


def load_file(path: Path, *, max_pixels: int, known_sha256: frozenset[bytes] | set[bytes] = frozenset()) -> LoadedFile:
    """Read, hash and fully decode one file. Never raises for a bad file: sets ``reason``.

    The full decode (not just the header) is what catches truncated JPEGs, which otherwise only
    fail much later when the embedder loads them.
    """
    uri = source_uri(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return LoadedFile(path, uri, reason="missing: file not found")
    except IsADirectoryError:
        return LoadedFile(path, uri, reason="unreadable: is a folder, not a file")
    except OSError as exc:
        return LoadedFile(path, uri, reason=f"unreadable: {exc.strerror or exc}")
    digest = hashlib.sha256(data).digest()
    if digest in known_sha256:
        return LoadedFile(path, uri, data=data, sha256=digest, known=True)
    try:
        info = probe_image(data, max_pixels=max_pixels)
        image = decode_image(data, max_pixels=max_pixels)
    except ImageDecodeError as exc:
        return LoadedFile(path, uri, reason=f"{exc.kind}: {exc}")
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 -- one odd file must not stop a 100k-image ingest
        log.warning("unexpected error decoding %s", path, exc_info=True)
        return LoadedFile(path, uri, reason=f"corrupt: {type(exc).__name__}: {exc}")
    width, height = image.size
    image.close()
    return LoadedFile(path, uri, data=data, sha256=digest, width=width, height=height, format=info.format)


def bounded_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    workers: int,
    window: Callable[[], int],
) -> Iterator[R]:
    """``map(fn, items)`` on a thread pool, in order, with at most ``window()`` calls in flight.

    The bound is what keeps memory flat: results (file bytes) are produced only a window ahead
    of the consumer, never the whole folder at once. ``window`` is asked again before each new
    submission so the caller can shrink it when files turn out to be large.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    pending: deque[Future[R]] = deque()
    iterator = iter(items)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="visearch-ingest") as pool:
        try:
            exhausted = False
            while True:
                while not exhausted and len(pending) < max(1, window()):
                    try:
                        item = next(iterator)
                    except StopIteration:
                        exhausted = True
                        break
                    pending.append(pool.submit(fn, item))
                if not pending:
                    return
                yield pending.popleft().result()
        finally:
            # On an early exit (error, consumer stopped) do not decode the rest of the window.
            for future in pending:
                future.cancel()
