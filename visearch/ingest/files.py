"""Finding image files, and reading + hashing + fully decoding them in a thread pool.

The expensive part of ingest (read, sha256, decode) runs here, in worker threads: Pillow's
decoders and hashlib release the GIL, so threads scale without pickling bytes to processes.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar

from visearch.embedding.decode import ImageDecodeError, decode_image, probe_image
from visearch.media import path_from_source_uri, source_uri  # noqa: F401 -- re-exported

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

#: File name extensions of the formats visearch reads (lower case). A file with another
#: extension is an image only if its first bytes say so (:data:`IMAGE_SIGNATURES`); otherwise
#: ingest skips it quietly and counts it (a readme.txt in a photo folder is not an error).
IMAGE_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".webp", ".bmp", ".dib", ".tif", ".tiff",
})
#: Leading bytes of those formats.
IMAGE_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM",
                    b"II*\x00", b"MM\x00*")


def looks_like_image(path: Path, head: bytes) -> bool:
    """Whether a file is meant to be an image: an image extension, or image magic bytes."""
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return True
    return head.startswith(IMAGE_SIGNATURES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def display_name(text: str) -> str:
    """``text`` made storable as PostgreSQL text: bytes of a file name that are not UTF-8
    (``os.fsdecode`` turned them into lone surrogates) are written as ``\\xNN`` escapes. The
    exact name stays in ``source_uri`` (percent-encoded bytes)."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return os.fsencode(text).decode("utf-8", "backslashreplace")


def list_files(folder: Path) -> list[Path]:
    """Every regular file under ``folder``, recursively, sorted for a reproducible order.

    Hidden files and folders (name starting with ".") are left out: they are OS or tool litter
    (.DS_Store, .ipynb_checkpoints), never a user's images. Everything else is returned whatever
    its extension (:func:`load_file` tells images from other files). Symlinked files are
    followed; symlinked folders are not (no cycles); symlinks that lead nowhere (dangling, or a
    loop) are returned too, so that they are reported as rejects with their reason.

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
            # follows file symlinks; keeps broken ones (a reject each), drops sockets and fifos
            if path.is_file() or (path.is_symlink() and not path.exists()):
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
    not_image: bool = False  # neither an image extension nor image bytes: skipped quietly


def load_file(
    path: Path, *, max_pixels: int, known_sha256: frozenset[bytes] | set[bytes] = frozenset(),
    skip_non_images: bool = True,
) -> LoadedFile:
    """Read, hash and fully decode one file. Never raises for a bad file: sets ``reason``.

    With ``skip_non_images`` a file that is neither named nor shaped like an image
    (:func:`looks_like_image`) is only marked ``not_image`` (a folder walk finds readme files;
    a COCO file that names the file as an image passes False: it must be one).

    The full decode (not just the header) is what catches truncated JPEGs, which otherwise only
    fail much later when the embedder loads them.
    """
    uri = source_uri(path)
    try:
        if skip_non_images and path.suffix.lower() not in IMAGE_EXTENSIONS:  # 16 bytes, not a whole video
            with open(path, "rb") as f:
                if not looks_like_image(path, f.read(16)):
                    return LoadedFile(path, uri, not_image=True)
        data = path.read_bytes()
    except FileNotFoundError:
        if path.is_symlink():
            return LoadedFile(path, uri, reason=f"broken symlink: points to {display_name(os.readlink(path))}, "
                                                "which does not exist")
        return LoadedFile(path, uri, reason="missing: file not found")
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return LoadedFile(path, uri, reason="symlink loop: the link leads back to itself")
        if isinstance(exc, IsADirectoryError):
            return LoadedFile(path, uri, reason="unreadable: is a folder, not a file")
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
