"""Keeping embeddings fresh: the ``visearch worker`` process, status, and control.

* :mod:`visearch.worker.scheduler` -- :class:`~visearch.worker.scheduler.EmbeddingWorker`: an
  APScheduler job that drains the embedding queue (:func:`visearch.embed.embed_pending`) on an
  interval and at once when PostgreSQL notifies ``visearch_embedding_queue``.
* :mod:`visearch.worker.status` -- per dataset and model: items, embedded, stale, failed (with
  reasons), rate and ETA of running workers (SQL in ``sql/status/``).
* :mod:`visearch.worker.control` -- enable/disable AI search per dataset, add/(de)activate models.
(Which model answers a search, and the coverage note, live in the search layer:
:mod:`visearch.search.serving`.)

This package imports neither APScheduler nor torch at import time.
"""
