"""The Litestar application: :func:`create_app`.

Handlers are thin: they parse, call the library (the same functions as the CLI) and shape the
response. Database work runs in worker threads (sync handlers with ``sync_to_thread=True``,
or ``anyio.to_thread`` for the search), on connections from the process's pool
(:meth:`Database.pooled`, shared with the search service). OpenAPI: ``/schema`` (docs), ``/schema/openapi.json``.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from litestar import Litestar, get
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

from visearch.config import Settings, get_settings
from visearch.db.database import Database
from visearch.http.auth import API_KEY_HEADER, auth_middleware, parse_api_keys
from visearch.http.controllers.collections import CollectionController
from visearch.http.controllers.curation import CurationController
from visearch.http.controllers.datasets import DatasetController
from visearch.http.controllers.images import AnnotationController, ImageController
from visearch.http.controllers.search import SearchController
from visearch.http.errors import exception_handlers
from visearch.http.jobs import EmbedJobs
from visearch.http.schemas import HealthOut


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


def create_app(
    settings: Settings | None = None,
    db: Database | None = None,
    *,
    embed_jobs: EmbedJobs | None = None,
    debug: bool = False,
) -> Litestar:
    """The visearch HTTP API over ``db``.

    Args:
        settings: configuration (API keys, body limit, model, ...); default: the environment.
        db: the database; default: :func:`visearch.db.database.open_database` (which starts
            the embedded server unless ``settings.database_url`` is set).
        embed_jobs: the background embedding runner (default: a new one for this app).
        debug: Litestar debug mode (tracebacks in 500 responses: never in production).

    Raises:
        ValueError: malformed ``settings.api_keys``.
    """
    settings = settings or get_settings()
    if db is None:
        from visearch.db.database import open_database

        db = open_database(settings)
    jobs = embed_jobs or EmbedJobs(db, settings)
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
        use_handler_docstrings=True,
        components=Components(security_schemes={
            "ApiKey": SecurityScheme(type="apiKey", name=API_KEY_HEADER, security_scheme_in="header",
                                     description="required when the server has API keys (VISEARCH_API_KEYS)"),
        }),
        security=[{"ApiKey": []}] if keys else None,
    )
    return Litestar(
        route_handlers=[
            SearchController, CollectionController, DatasetController, ImageController,
            AnnotationController, CurationController, health,
        ],
        dependencies={
            "db": Provide(_provide_db, sync_to_thread=False),
            "settings": Provide(_provide_settings, sync_to_thread=False),
            "jobs": Provide(_provide_jobs, sync_to_thread=False),
        },
        middleware=[auth_middleware()],
        exception_handlers=exception_handlers(),
        request_max_body_size=settings.http_max_body_bytes,
        openapi_config=openapi,
        state=State({"db": db, "settings": settings, "jobs": jobs, "api_keys": keys}),
        on_shutdown=[lambda: jobs.stop()],
        debug=debug,
    )
