"""The Litestar application: :func:`create_app`.

Handlers are thin: they parse, call the library (the same functions as the CLI) and shape the
response. Database work runs in worker threads (sync handlers with ``sync_to_thread=True``,
or ``anyio.to_thread`` for the search), on connections from the process's pool
(:meth:`Database.pooled`, shared with the search service). OpenAPI: ``/schema`` (docs), ``/schema/openapi.json``.
"""

from __future__ import annotations

import dataclasses
from importlib.metadata import PackageNotFoundError, version

from litestar import Litestar, get
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, OpenAPIType, Schema, SecurityScheme

from visearch.config import Settings, get_settings
from visearch.db.database import Database
from visearch.db.routing import ReadRouter, open_read_router
from visearch.http.auth import API_KEY_HEADER, auth_middleware, parse_api_keys, role_guard
from visearch.http.controllers.collections import CollectionController
from visearch.http.controllers.curation import CurationController
from visearch.http.controllers.datasets import DatasetController
from visearch.http.controllers.housekeeping import (
    CollectionExportController,
    ConceptController,
    HousekeepingImageController,
    ModelController,
)
from visearch.http.controllers.images import AnnotationController, ImageController
from visearch.http.controllers.label_studio import LabelStudioController
from visearch.http.controllers.search import SearchController
from visearch.http.edge import check_request
from visearch.http.errors import exception_handlers
from visearch.http.jobs import EmbedJobs
from visearch.http.openapi_page import OfflineDocsPlugin
from visearch.http.reads import note_writes_middleware
from visearch.http.schemas import HealthOut
from visearch.http.web import console_handlers, template_config


def _version() -> str:
    try:
        return version("visearch")
    except PackageNotFoundError:
        return "0"


@get("/health", summary="Liveness", tags=["health"], sync_to_thread=False)
def health(state: State) -> HealthOut:
    """Always 200 while the server runs; needs no API key."""
    return HealthOut(status="ok", version=_version(), api_keys_required=bool(state.api_keys))


def _provide_db(state: State) -> Database:
    return state.db


def _provide_settings(state: State) -> Settings:
    return state.settings


def _provide_jobs(state: State) -> EmbedJobs:
    return state.jobs


def _provide_reads(state: State) -> ReadRouter:
    return state.reads


def create_app(
    settings: Settings | None = None,
    db: Database | None = None,
    *,
    embed_jobs: EmbedJobs | None = None,
    read_router: ReadRouter | None = None,
    debug: bool = False,
) -> Litestar:
    """The visearch HTTP API over ``db``.

    Args:
        settings: configuration (API keys, body limit, model, ...); default: the environment.
        db: the database; default: :func:`visearch.db.database.open_database` (which starts
            the embedded server unless ``settings.database_url`` is set).
        embed_jobs: the background embedding runner (default: a new one for this app).
        read_router: where searches, histograms, thumbnails and status reads go (default: the
            replicas in ``settings.read_database_urls``, else ``db``); see visearch.db.routing.
        debug: Litestar debug mode (tracebacks in 500 responses: never in production).

    Raises:
        ApiKeyError: malformed ``settings.api_keys`` (:func:`visearch.http.auth.parse_api_keys`).
    """
    settings = settings or get_settings()
    if db is None:
        from visearch.db.database import open_database

        db = open_database(settings)
    jobs = embed_jobs or EmbedJobs(db, settings)
    reads = read_router or open_read_router(db, settings)
    keys = parse_api_keys(settings.api_keys)
    openapi = OpenAPIConfig(
        title="visearch",
        version=_version(),
        description=(
            "Visual search over images and the objects (boxes) in them, in PostgreSQL + pgvector. "
            "Scores are cosine similarities in [-1, 1]; boxes are COCO [x, y, width, height] in "
            "pixels. Errors are JSON: {status_code, error, detail, extra}."
            + (f" Every /v1 route needs the {API_KEY_HEADER} header." if keys else "")
        ),
        path="/schema",
        render_plugins=[OfflineDocsPlugin()],  # no CDN: visearch.http.openapi_page
        use_handler_docstrings=True,
        components=Components(security_schemes={
            "ApiKey": SecurityScheme(type="apiKey", name=API_KEY_HEADER, security_scheme_in="header",
                                     description="required when the server has API keys (VISEARCH_API_KEYS)"),
        }),
        security=[{"ApiKey": []}] if keys else None,
    )
    app = Litestar(
        route_handlers=[
            SearchController, CollectionController, DatasetController, ImageController,
            AnnotationController, LabelStudioController, CurationController, health,
            HousekeepingImageController, ConceptController, ModelController,
            CollectionExportController, *console_handlers(),
        ],
        template_config=template_config(),
        dependencies={
            "db": Provide(_provide_db, sync_to_thread=False),
            "settings": Provide(_provide_settings, sync_to_thread=False),
            "jobs": Provide(_provide_jobs, sync_to_thread=False),
            "reads": Provide(_provide_reads, sync_to_thread=False),
        },
        middleware=[auth_middleware(), note_writes_middleware],
        guards=[role_guard],
        before_request=check_request,
        exception_handlers=exception_handlers(),
        request_max_body_size=settings.http_max_body_bytes,
        openapi_config=openapi,
        state=State({"db": db, "settings": settings, "jobs": jobs, "api_keys": keys, "reads": reads}),
        on_shutdown=[lambda: jobs.stop(), reads.close],
        debug=debug,
    )
    _integer_bounds_as_integers(app.openapi_schema)
    return app


def _integer_bounds_as_integers(node, seen=None) -> None:
    """Publish integer bounds as JSON integers. Litestar writes ``Parameter(le=2**63 - 1)`` as the
    float 9.223372036854776e18, which is 2**63: a client (schemathesis did) then sends 2**63, which
    the schema allows and the server rightly refuses."""
    seen = set() if seen is None else seen
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, Schema):
        types = node.type if isinstance(node.type, (list, tuple)) else [node.type]
        if OpenAPIType.INTEGER in types:
            for name in ("maximum", "minimum", "exclusive_maximum", "exclusive_minimum"):
                value = getattr(node, name, None)
                if isinstance(value, float) and value.is_integer():
                    setattr(node, name, min(int(value), 2**63 - 1) if value > 0 else max(int(value), -(2**63)))
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        for f in dataclasses.fields(node):
            _integer_bounds_as_integers(getattr(node, f.name), seen)
    elif isinstance(node, dict):
        for value in node.values():
            _integer_bounds_as_integers(value, seen)
    elif isinstance(node, (list, tuple)):
        for value in node:
            _integer_bounds_as_integers(value, seen)
