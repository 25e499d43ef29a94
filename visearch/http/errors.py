"""All error responses of the HTTP API, mapped in one place (Litestar exception handlers).

Every error has the JSON body :class:`~visearch.http.schemas.ErrorBody`
(``status_code``, ``error``, ``detail``, ``extra``). The mapping:

==========================================  ======  =====================================
cause                                       status  ``error``
==========================================  ======  =====================================
malformed body, bad parameter types/ranges  400     ``bad_request`` (``extra``: the fields)
(also JSON nested too deep, numbers beyond
a double, malformed multipart, bad UTF-8:
:mod:`visearch.http.edge`)
missing or wrong ``X-API-Key``              401     ``unauthorized``
unknown id or name (:class:`NotFoundError`)  404     ``not_found``
name already taken (:class:`ConflictError`)  409     ``conflict``
request body over ``http_max_body_bytes``   413     ``request_too_large``
image over ``max_image_pixels`` (bomb)      413     ``image_too_large``
not an image / unknown image format         415     ``unsupported_image``
empty, truncated or corrupt image           422     ``undecodable_image``
box that does not fit the image             422     ``invalid_box``
query item not embedded yet                 422     ``not_embedded``
other invalid requests (text query on an    422     ``invalid_request``
image-only model, bad combination, ...)
missing role for the route (read key, POST)  403     ``forbidden``
file outside the media roots                403     ``forbidden``
no free database connection (overload)      503     ``busy`` (``Retry-After``)
database unreachable (down, restarting)     503     ``database_unavailable`` (``Retry-After``)
anything else (a bug)                       500     ``internal_error`` (logged)
==========================================  ======  =====================================
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from psycopg_pool import PoolTimeout
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException
from litestar.openapi.datastructures import ResponseSpec
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from visearch.embedding.crops import InvalidBoxError
from visearch.embedding.decode import ImageDecodeError
from visearch.errors import ConflictError, ForbiddenError, NotEmbeddedError, NotFoundError, VisearchError
from visearch.http.schemas import ErrorBody

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "request_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
}
_DECODE = {  # ImageDecodeError.kind -> (status, error)
    "unidentified": (415, "unsupported_image"),
    "too_large": (413, "image_too_large"),
}


#: Seconds a client should wait before retrying a 503.
RETRY_AFTER_SECONDS = 5


def error_response(
    status: int, error: str, detail: str, extra: Any = None, headers: dict[str, str] | None = None
) -> Response[ErrorBody]:
    return Response(
        ErrorBody(status_code=status, error=error, detail=detail, extra=extra),
        status_code=status,
        media_type=MediaType.JSON,
        headers=headers,
    )


def _decode_error(exc: ImageDecodeError, detail: str | None = None) -> Response[ErrorBody]:
    status, error = _DECODE.get(exc.kind, (422, "undecodable_image"))
    return error_response(status, error, detail or str(exc), {"kind": exc.kind})


def _visearch_error(request: Request, exc: VisearchError) -> Response[ErrorBody]:
    if isinstance(exc, NotFoundError):
        return error_response(404, "not_found", str(exc))
    if isinstance(exc, ConflictError):
        return error_response(409, "conflict", str(exc))
    if isinstance(exc, ForbiddenError):
        return error_response(403, "forbidden", str(exc))
    if isinstance(exc, NotEmbeddedError):
        return error_response(422, "not_embedded", str(exc))
    # The search service wraps image and box errors in InvalidRequestError: keep their status.
    cause = exc.__cause__
    if isinstance(cause, ImageDecodeError):
        return _decode_error(cause, str(exc))
    if isinstance(cause, InvalidBoxError):
        return error_response(422, "invalid_box", str(exc))
    return error_response(422, "invalid_request", str(exc))  # InvalidRequestError and the rest


def _image_decode_error(request: Request, exc: ImageDecodeError) -> Response[ErrorBody]:
    return _decode_error(exc)


def _invalid_box(request: Request, exc: InvalidBoxError) -> Response[ErrorBody]:
    return error_response(422, "invalid_box", str(exc))


def _http_exception(request: Request, exc: HTTPException) -> Response[ErrorBody]:
    status = exc.status_code
    if status >= 500:
        return _internal(request, exc)
    detail = exc.detail
    if status == 413:
        limit = request.app.state.settings.http_max_body_bytes
        detail = (f"request body larger than {limit} bytes; the server's limit is set by "
                  "VISEARCH_HTTP_MAX_BODY_BYTES")
    return error_response(status, _HTTP_CODES.get(status, "client_error"), detail, exc.extra or None)


def _integrity_error(request: Request, exc: psycopg.errors.IntegrityError) -> Response[ErrorBody]:
    # e.g. a concurrent request created the same name first; the database kept the data sound
    message = exc.diag.message_primary or str(exc)
    return error_response(409, "conflict", f"refused by the database: {message}")


def _data_error(request: Request, exc: psycopg.DataError) -> Response[ErrorBody]:
    message = exc.diag.message_primary or str(exc)
    return error_response(422, "invalid_request", f"refused by the database: {message}")


def _pool_timeout(request: Request, exc: PoolTimeout) -> Response[ErrorBody]:
    # every pooled connection stayed busy, or none could be made, for the pool's whole timeout
    return error_response(503, "busy", "no database connection could be had in time (the server is "
                          "overloaded or the database is down); retry later",
                          headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


def _operational_error(request: Request, exc: psycopg.OperationalError) -> Response[ErrorBody]:
    # the database went away mid-request (shut down, restarting, network): nothing was changed
    # that was not rolled back; the pool checks connections on checkout, so a retry gets a new one
    log.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc)
    return error_response(503, "database_unavailable", "the database is unavailable; retry later",
                          headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


def _recursion_error(request: Request, exc: RecursionError) -> Response[ErrorBody]:
    # a safety net behind visearch.http.edge's depth limit
    return error_response(400, "bad_request", "the request is nested too deeply")


def _internal(request: Request, exc: Exception) -> Response[ErrorBody]:
    log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(
        HTTP_500_INTERNAL_SERVER_ERROR, "internal_error",
        "internal server error (logged on the server)",
    )


def exception_handlers() -> dict:
    """The handler map for :class:`litestar.Litestar` (``exception_handlers=``)."""
    return {
        VisearchError: _visearch_error,
        ImageDecodeError: _image_decode_error,
        InvalidBoxError: _invalid_box,
        HTTPException: _http_exception,
        psycopg.errors.IntegrityError: _integrity_error,
        psycopg.DataError: _data_error,
        PoolTimeout: _pool_timeout,
        psycopg.OperationalError: _operational_error,
        RecursionError: _recursion_error,
        HTTP_500_INTERNAL_SERVER_ERROR: _internal,
    }


_DESCRIPTIONS = {
    400: "malformed request: invalid JSON, wrong types, values out of range",
    401: "missing or invalid X-API-Key (only when the server has API keys)",
    403: "the API key's role does not allow this route (read < write < admin), or the image's "
         "file lies outside the media roots",
    404: "unknown id or name",
    409: "name already taken",
    413: "request body over the server's limit, or an image with too many pixels (decompression bomb)",
    415: "not an image, or an unsupported image format / Content-Type",
    503: "the database is unavailable or overloaded; retry after the Retry-After header's seconds",
    422: "valid JSON that cannot be answered: undecodable image, invalid box, text query on an "
         "image-only model, query item not embedded yet, ...",
}


def error_responses(*codes: int) -> dict[int, ResponseSpec]:
    """OpenAPI documentation of the error responses of an endpoint."""
    return {
        code: ResponseSpec(data_container=ErrorBody, description=_DESCRIPTIONS[code], generate_examples=False)
        for code in codes
    }
