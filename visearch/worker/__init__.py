"""Keeping embeddings fresh: the ``visearch worker`` process.

* :mod:`visearch.worker.scheduler` -- :class:`~visearch.worker.scheduler.EmbeddingWorker`: an
  APScheduler job that drains the embedding queue (:func:`visearch.embed.embed_pending`) on an
  interval and at once when PostgreSQL notifies ``visearch_embedding_queue``.
* :mod:`visearch.worker.cli` -- the ``worker``, ``status``, ``dataset`` and ``model`` commands.
(Which model answers a search, and the coverage note, live in the search layer:
:func:`visearch.search.serving_model`, :class:`visearch.search.Coverage`.)

The worker uses the services (:mod:`visearch.admin` for datasets, models and
``models_to_embed``; :mod:`visearch.status` for ``visearch status``); no service imports the
worker. This package imports neither APScheduler nor torch at import time.
"""
