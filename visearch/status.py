"""``visearch status`` and ``GET /v1/datasets/{id}/status``: how fresh the embeddings are,
per dataset and model.

Reads ``sql/status/datasets.sql`` (over the ``embedding_status`` view), ``failures.sql`` and
``workers.sql``; analysts can run the same SQL from psql. Counts are of items (images + boxes).
Every embed run has a row in ``embedding_workers`` (``visearch worker``, ``visearch embed``,
the HTTP job: :class:`visearch.embed.RunProgress`), so rate and ETA show for each of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

from psycopg.rows import dict_row

from visearch.admin import ALIVE_SECONDS, dataset_ids_by_name
from visearch.db.database import Database
from visearch.resources import read_sql


@dataclass
class StatusReport:
    """Rows as dicts, column names as in the SQL files.

    Attributes:
        datasets: per (dataset, model): items, embedded, stale, retrying, in_progress, failed,
            covered, workers, rate (items/s), eta_seconds, index_missing (the kinds whose
            HNSW index is missing though vectors exist).
        failures: failed or retrying items grouped by dataset, model, kind and reason.
        workers: every worker row, with state idle | embedding | stopped | dead.
    """

    datasets: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    workers: list[dict[str, Any]] = field(default_factory=list)


def collect_status(db: Database, datasets: Sequence[str] = (), *, alive_seconds: float = ALIVE_SECONDS) -> StatusReport:
    """The status of the named datasets (all when empty), disabled ones included.

    Raises:
        NotFoundError: an unknown dataset name.
    """
    return status_of_datasets(db, dataset_ids_by_name(db, datasets), alive_seconds=alive_seconds)


def status_of_datasets(db: Database, dataset_ids: list[int] | None, *, alive_seconds: float = ALIVE_SECONDS) -> StatusReport:
    """:func:`collect_status` of datasets given by id (``None``: all)."""
    with db.connect() as conn:
        params = {"dataset_ids": dataset_ids, "alive_seconds": alive_seconds}

        def rows(name: str) -> list[dict[str, Any]]:
            with conn.cursor(row_factory=dict_row) as cur:
                return cur.execute(read_sql(f"status/{name}.sql"), params).fetchall()

        return StatusReport(datasets=rows("datasets"), failures=rows("failures"), workers=rows("workers"))


def format_duration(seconds: float | None) -> str:
    """``95`` -> ``'1m35s'``; ``None`` -> ``'-'``."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def format_status(report: StatusReport) -> str:
    """The report as text tables: datasets x models, failures grouped by reason, workers."""
    from tabulate import tabulate

    if not report.datasets:
        return "no datasets (or no models yet: run `visearch embed` or `visearch worker`)"
    rows = [
        (
            r["dataset"] + ("" if r["search_enabled"] else " (disabled)"),
            r["model"] + ("" if r["model_active"] else " (inactive)"),
            r["items"], r["embedded"], r["stale"], r["in_progress"], r["retrying"], r["failed"],
            "yes" if r["covered"] else "no",
            f"{r['rate']:.1f}/s" if r["rate"] else "-",
            format_duration(r["eta_seconds"]),
            "index missing: " + ", ".join(r["index_missing"]) if r["index_missing"] else "ok",
        )
        for r in report.datasets
    ]
    out = [tabulate(rows, headers=["dataset", "model", "items", "embedded", "stale", "embedding now",
                                   "retrying", "failed", "covered", "rate", "ETA", "HNSW"])]
    missing = sorted({(r["model"], kind) for r in report.datasets for kind in r["index_missing"] or ()})
    if missing:
        out.append("\nindex missing: " + "; ".join(f"{m} ({k} vectors)" for m, k in missing)
                   + ". Searches of these scan exactly (slower) until the next `visearch embed` or"
                   " worker pass builds the index (CREATE INDEX CONCURRENTLY).")
    if report.failures:
        out.append("\nfailures (retrying: will be tried again; given up: after the attempt limit):")
        out.append(tabulate(
            [(f["dataset"], f["model"], f["item_kind"], "given up" if f["given_up"] else "retrying",
              f["items"], f["reason"], ", ".join(map(str, f["example_ids"])), _shorten(f["example"], 70))
             for f in report.failures],
            headers=["dataset", "model", "kind", "state", "items", "reason", "ids", "example"],
        ))
    live = [w for w in report.workers if w["state"] in ("idle", "embedding")]
    if report.workers:
        out.append(f"\nworkers ({len(live)} alive):")
        out.append(tabulate(
            [(w["worker_id"], w["model"], w["state"], w["items_done"], w["failures"],
              f"{w['rate']:.1f}/s" if w["rate"] else "-", w["backlog"],
              w["heartbeat_at"].strftime("%Y-%m-%d %H:%M:%S"))
             for w in report.workers[:20]],
            headers=["worker", "model", "state", "embedded", "failed", "rate", "backlog", "heartbeat"],
        ))
    else:
        out.append("\nno worker has run yet: start one with `visearch worker`")
    return "\n".join(out)


def _shorten(text: str | None, width: int) -> str:
    text = (text or "").replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"
