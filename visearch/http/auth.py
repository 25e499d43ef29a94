"""API keys and roles: header ``X-API-Key``, keys from ``Settings.api_keys`` (``VISEARCH_API_KEYS``).

Key format (one entry per key; entries separated by commas, or a JSON list of strings when a
secret contains a comma)::

    name:role:secret     e.g. alice:admin:Zm9vYmFyYmF6cXV4cXV1eA==
    name:secret          role `write`
    secret               role `write`, identity ``key-<first 12 hex of sha256(secret)>``

``:`` is the only separator: everything after ``name:`` (or ``name:role:``) is the secret, so
a secret may contain ``=``, ``:``, spaces and non-ASCII characters. ``name`` is 1-64 letters, digits or
``_.@-``; ``role`` is ``read``, ``write`` or ``admin``. Secrets have at least
:data:`MIN_SECRET_CHARS` characters. A bare entry with ``=`` inside it (not only base64
padding at its end) is refused as ambiguous: the old ``name=secret`` form is written
``name:secret`` now. Keys are compared in constant time (sha256 digests, every key compared).

Roles: every route needs one. By default ``GET``/``HEAD`` need ``read`` and every other method
``write``; a handler says otherwise with ``opt={"role": "read" | "write" | "admin"}`` (searches
are POSTs that change nothing: ``read``; disabling a dataset: ``admin``). ``admin`` includes
``write``, which includes ``read``. A key without the role gets 403.

Without configured keys every caller is ``anonymous`` with role ``admin``; ``visearch serve``
then refuses to listen on anything but localhost. With keys, every route except ``/health``
and the OpenAPI docs (``/schema``) needs a valid key (401 otherwise).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Sequence

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult, DefineMiddleware

API_KEY_HEADER = "X-API-Key"
ANONYMOUS = "anonymous"
#: Paths open without a key (regular expressions).
PUBLIC_PATHS = ["^/schema", "^/health$"]
#: Roles, weakest first: a role may do everything the ones before it may.
ROLES = ("read", "write", "admin")
#: Role of a key that names none.
DEFAULT_ROLE = "write"
MIN_SECRET_CHARS = 16
_NAME = re.compile(r"[\w.@-]{1,64}")
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class ApiKey:
    """One configured key: the caller's identity (owner of its collections) and role."""

    name: str
    role: str
    digest: bytes  # sha256 of the secret's UTF-8 bytes


class ApiKeyError(ValueError):
    """A malformed ``VISEARCH_API_KEYS`` entry; the message says which and why (never the secret)."""


def parse_api_keys(keys: Sequence[str]) -> list[ApiKey]:
    """``["alice:read:<secret>", "bob:<secret>", "<secret>"]`` -> one :class:`ApiKey` each.

    Raises:
        ApiKeyError: an entry with an empty or short (< 16 characters) secret, a bad name or
            role, an ambiguous ``=`` in a bare secret, or the same secret or name twice. The
            message names the entry by position and name, never by its secret.
    """
    parsed: list[ApiKey] = []
    for n, entry in enumerate(keys, 1):
        entry = entry.strip()
        where = f"API key #{n}"
        if ":" in entry:
            name, _, rest = entry.partition(":")
            role, sep, secret = rest.partition(":")
            if not (sep and role in ROLES):
                role, secret = DEFAULT_ROLE, rest
            if not _NAME.fullmatch(name):
                raise ApiKeyError(f"{where}: the name before ':' must be 1-64 letters, digits or _ . @ -")
            where += f" ({name})"
        else:
            secret, role = entry, DEFAULT_ROLE
            if "=" in secret.rstrip("="):
                raise ApiKeyError(
                    f"{where}: '=' inside a bare key is ambiguous; write it as name:secret "
                    "(':' separates the name; the old name=secret form is not read any more)"
                )
            name = "key-" + hashlib.sha256(secret.encode()).hexdigest()[:12]
        if not secret:
            raise ApiKeyError(f"{where}: empty secret")
        if len(secret) < MIN_SECRET_CHARS:
            raise ApiKeyError(
                f"{where}: the secret has {len(secret)} characters; at least {MIN_SECRET_CHARS} are needed "
                "(e.g. `openssl rand -base64 24`)"
            )
        key = ApiKey(name=name, role=role, digest=hashlib.sha256(secret.encode()).digest())
        if any(k.digest == key.digest for k in parsed):
            raise ApiKeyError(f"{where}: the same secret is configured twice")
        if any(k.name == key.name for k in parsed):
            raise ApiKeyError(f"{where}: the name {name!r} is used twice")
        parsed.append(key)
    return parsed


def find_key(keys: Sequence[ApiKey], given: bytes) -> ApiKey | None:
    """The key whose secret is ``given`` (raw header bytes), comparing in constant time: the
    sha256 of ``given`` is compared with every key's, with no early exit."""
    digest = hashlib.sha256(given).digest()
    found = None
    for key in keys:
        if hmac.compare_digest(key.digest, digest):
            found = key
    return found


class ApiKeyMiddleware(AbstractAuthenticationMiddleware):
    """Sets ``request.user`` to the caller's identity (a str) and ``request.auth`` to its role;
    401 for a missing or wrong key."""

    async def authenticate_request(self, connection: ASGIConnection) -> AuthenticationResult:
        keys: list[ApiKey] = connection.app.state.api_keys
        if not keys:
            return AuthenticationResult(user=ANONYMOUS, auth="admin")
        # Raw bytes (ASGI headers are bytes): a non-ASCII secret compares as its UTF-8 bytes.
        raw = [v for k, v in connection.scope["headers"] if k.lower() == API_KEY_HEADER.lower().encode()]
        if not raw or not raw[0]:
            raise NotAuthorizedException(f"missing {API_KEY_HEADER} header: this server requires an API key")
        key = find_key(keys, raw[0].strip())
        if key is None:
            raise NotAuthorizedException(f"invalid API key in the {API_KEY_HEADER} header")
        return AuthenticationResult(user=key.name, auth=key.role)


def auth_middleware() -> DefineMiddleware:
    return DefineMiddleware(ApiKeyMiddleware, exclude=PUBLIC_PATHS)


def required_role(handler: BaseRouteHandler) -> str:
    """The role a route needs: ``opt["role"]``, else by HTTP method (GET/HEAD read, others write)."""
    role = handler.opt.get("role")
    if role is not None:
        if role not in ROLES:
            raise ValueError(f"{handler}: opt role {role!r} is not one of {ROLES}")
        return role
    methods = getattr(handler, "http_methods", None) or {"GET"}
    return "read" if set(methods) <= _READ_METHODS else "write"


def role_guard(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
    """Litestar guard: 403 unless the caller's role covers :func:`required_role`."""
    if "user" not in connection.scope or connection.scope.get("auth") is None:
        return  # a public path (the middleware left it alone): /health, /schema
    need = required_role(handler)
    have = connection.scope["auth"]
    if ROLES.index(have) < ROLES.index(need):
        raise PermissionDeniedException(
            f"this API key ({connection.scope['user']}) has role {have!r}; "
            f"{connection.scope['method']} {connection.scope['path']} needs {need!r}"
        )
