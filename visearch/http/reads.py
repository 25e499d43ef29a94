"""Read replicas in the HTTP API: which owner has just written (see :mod:`visearch.db.routing`).

Every successful request that may write (any method but GET/HEAD/OPTIONS, unless its handler
says ``opt={"role": "read"}``, as ``POST /v1/search`` does) records its caller with
:meth:`ReadRouter.note_write` before the response starts, so that caller's next reads go to the
primary until a replica has replayed the write.
"""

from __future__ import annotations

from litestar.types import ASGIApp, Message, Receive, Scope, Send

from visearch.http.auth import ANONYMOUS

_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _may_write(scope: Scope) -> bool:
    if scope.get("method") in _READ_METHODS:
        return False
    handler = scope.get("route_handler")
    return getattr(handler, "opt", {}).get("role") != "read"


def note_writes_middleware(app: ASGIApp) -> ASGIApp:
    """ASGI middleware: after a successful write, ``state.reads.note_write(request.user)``."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _may_write(scope):
            await app(scope, receive, send)
            return

        async def send_noting(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] < 400:
                scope["app"].state.reads.note_write(scope.get("user") or ANONYMOUS)
            await send(message)

        await app(scope, receive, send_noting)

    return middleware
