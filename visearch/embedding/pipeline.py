"""Batched embedding of many images/box crops, decoding in worker processes while the model runs.

A ``torch.utils.data.DataLoader`` decodes, crops and preprocesses items in ``num_workers``
processes (prefetching two batches each) while the calling process runs the model on the
previous batch. Per-item failures (corrupt bytes, unreadable file, bad box) are reported in the
batch, never raised, so one bad item cannot abort an ingest run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from .base import EmbeddingModel
from .crops import CropSpec, InvalidBoxError, crop_box
from .decode import DEFAULT_MAX_PIXELS, ImageDecodeError, decode_image


@dataclass(frozen=True)
class EmbedItem:
    """One thing to embed: a whole image, or one box of it.

    Exactly one of ``data`` and ``path`` must be given.

    Attributes:
        key: opaque identifier handed back with the vector or the failure, e.g. ``("image", 17)``
            or ``("annotation", 905)``. Must be picklable.
        data: encoded image bytes.
        path: path of an encoded image file (read in the worker).
        bbox_xywh: optional COCO box ``(x, y, width, height)`` in displayed-image pixels; the
            item is then the :func:`~visearch.embedding.crops.crop_box` crop of that box.

    Tip: list an image's boxes consecutively and reuse the same ``bytes`` object (or path) for
    them -- each worker keeps its most recently decoded image, so the image is decoded once.
    """

    key: Hashable
    data: bytes | None = None
    path: str | os.PathLike | None = None
    bbox_xywh: tuple[float, float, float, float] | None = None

    def __post_init__(self):
        if (self.data is None) == (self.path is None):
            raise ValueError(f"EmbedItem {self.key!r}: give exactly one of data= and path=")


@dataclass
class EmbeddedBatch:
    """Result of one batch, in input order.

    Attributes:
        keys: keys of the successfully embedded items; ``keys[i]`` belongs to ``vectors[i]``.
        vectors: ``(len(keys), model.dim)`` float32, rows L2-normalised.
        failures: ``(key, reason)`` for each item of the batch that could not be embedded.
    """

    keys: list[Any]
    vectors: np.ndarray
    failures: list[tuple[Any, str]] = field(default_factory=list)


def default_num_workers() -> int:
    """Decode workers to use by default: one core is left to inference, at most 4 workers.

    Returns 0 (decode in-process) on a single-core machine.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(0, min(4, cores - 1))


class _ItemDataset(Dataset):
    """Map-style dataset: item index -> ``(key, tensor | None, failure reason | None)``."""

    def __init__(self, items: Sequence[EmbedItem], preprocess: Callable[[Image.Image], torch.Tensor], crop: CropSpec,
                 max_pixels: int = DEFAULT_MAX_PIXELS):
        self.items = items
        self.preprocess = preprocess
        self.crop = crop
        self.max_pixels = max_pixels
        self._last: tuple[Any, Image.Image] | None = None  # per-process cache of the last decoded image

    def __len__(self) -> int:
        return len(self.items)

    def _image(self, item: EmbedItem) -> Image.Image:
        # The bytes object's identity is a safe cache key: self.items keeps every item alive.
        source = ("path", os.fspath(item.path)) if item.path is not None else ("data", id(item.data))
        if self._last is not None and self._last[0] == source:
            return self._last[1]
        data = Path(item.path).read_bytes() if item.path is not None else item.data
        image = decode_image(data, max_pixels=self.max_pixels)
        self._last = (source, image)
        return image

    def __getitem__(self, index: int):
        item = self.items[index]
        try:
            image = self._image(item)
            if item.bbox_xywh is not None:
                image = crop_box(image, item.bbox_xywh, self.crop)
            return item.key, self.preprocess(image), None
        except ImageDecodeError as exc:
            reason = f"undecodable image ({exc.kind}): {exc}"
        except InvalidBoxError as exc:
            reason = f"bad box: {exc}"
        except OSError as exc:
            reason = f"cannot read {item.path}: {exc}"
        except Exception as exc:  # noqa: BLE001 -- isolate any other per-item error
            reason = f"{type(exc).__name__}: {exc}"
        return item.key, None, reason


def _collate(samples):
    keys, tensors, failures = [], [], []
    for key, tensor, reason in samples:
        if tensor is None:
            failures.append((key, reason))
        else:
            keys.append(key)
            tensors.append(tensor)
    return keys, (torch.stack(tensors) if tensors else None), failures


def _die_with_parent(parent_pid: int, _worker_id: int) -> None:
    """``worker_init_fn`` of the decode processes: die when the process that started them dies.

    A decode process orphaned by a SIGKILLed worker used to live on forever (blocked flushing
    its result queue to a reader that is gone, ignoring SIGTERM). On Linux the kernel sends it
    SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)``); everywhere, a daemon thread also
    checks the parent pid every second. (PR_SET_PDEATHSIG fires when the parent *thread* that
    forked it ends; the embedding loop runs on one thread from start to end of the loader.)
    """
    import signal
    import sys
    import threading
    import time

    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            pr_set_pdeathsig = 1
            libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):  # no libc prctl: the watcher thread below still works
            pass
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="visearch-parent-watch", daemon=True).start()


def iter_embedded_batches(
    items: Sequence[EmbedItem],
    model: EmbeddingModel,
    *,
    batch_size: int = 64,
    num_workers: int | None = None,
    crop: CropSpec = CropSpec(),
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Iterator[EmbeddedBatch]:
    """Embed many items, overlapping decoding/preprocessing with inference.

    Args:
        items: what to embed; batches follow this order (``batch_size`` consecutive items each).
        model: any :class:`EmbeddingModel`; its ``preprocessor`` runs in the workers.
        batch_size: items per batch (>= 1); also the inference batch size.
        num_workers: decode worker processes; ``None`` -> :func:`default_num_workers`; ``0``
            decodes in the calling process (no overlap, no subprocesses).
        crop: framing for items with a ``bbox_xywh`` (same rule as query crops).
        max_pixels: images with more pixels fail (``too_large``); pass the limit ingest used
            (``Settings.max_image_pixels``) so that what was ingested can be embedded.

    Yields:
        One :class:`EmbeddedBatch` per ``batch_size`` items (the last may be shorter). Every item
        appears exactly once, either in ``keys`` or in ``failures``.

    Raises:
        ValueError: ``batch_size < 1`` or ``num_workers < 0``.
        RuntimeError: a worker process died (e.g. killed for memory); per-item errors never raise.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    workers = default_num_workers() if num_workers is None else num_workers
    if workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {workers}")
    items = list(items)
    if not items:
        return
    loader = DataLoader(
        _ItemDataset(items, model.preprocessor, crop, max_pixels),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=_collate,
        persistent_workers=False,
        prefetch_factor=2 if workers else None,
        worker_init_fn=partial(_die_with_parent, os.getpid()) if workers else None,
    )
    empty = np.zeros((0, model.dim), dtype=np.float32)
    for keys, pixels, failures in loader:
        vectors = model.embed_batch(pixels) if pixels is not None else empty
        yield EmbeddedBatch(keys=keys, vectors=vectors, failures=failures)
