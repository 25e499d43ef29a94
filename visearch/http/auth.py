"""Optional API keys: header ``X-API-Key``, keys from ``Settings.api_keys`` (``VISEARCH_API_KEYS``).

Each configured key is ``name=secret`` (the caller's identity is ``name``) or a bare secret
(identity ``key-<first 12 hex of its sha256>``, so the secret itself never appears in the
database). The identity owns the caller's collections. Without configured keys every caller is
``anonymous`` and no header is needed; ``visearch serve`` then refuses to listen on anything but
localhost. With keys, every route except ``/health`` and the OpenAPI docs (``/schema``) needs
a valid key (401 otherwise).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Sequence

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult, DefineMiddleware

API_KEY_HEADER = "X-API-Key"
ANONYMOUS = "anonymous"
#: Paths open without a key (regular expressions).
PUBLIC_PATHS = ["^/schema", "^/health$"]


def parse_api_keys(keys: Sequence[str]) -> dict[str, str]:
    """``["alice=s3cret", "bare"]`` -> ``{"s3cret": "alice", "bare": "key-1a2b..."}``.

    Raises:
        ValueError: an empty secret or name, or the same secret twice.
    """
    parsed: dict[str, str] = {}
    for entry in keys:
        name, sep, secret = entry.partition("=")
        if not sep:
            name, secret = "", entry
        name, secret = name.strip(), secret.strip()
        if not secret or (sep and not name):
            raise ValueError("each API key is 'name=secret' or a bare secret, both non-empty")
        if secret in parsed:
            raise ValueError("the same API key secret is configured twice")
        parsed[secret] = name or "key-" + hashlib.sha256(secret.encode()).hexdigest()[:12]
    return parsed


class ApiKeyMiddleware(AbstractAuthenticationMiddleware):
    """Sets ``request.user`` to the caller's identity (a str); 401 for a missing or wrong key."""

    async def authenticate_request(self, connection: ASGIConnection) -> AuthenticationResult:
        keys: dict[str, str] = connection.app.state.api_keys
        if not keys:
            return AuthenticationResult(user=ANONYMOUS, auth=None)
        given = connection.headers.get(API_KEY_HEADER)
        if not given:
            raise NotAuthorizedException(f"missing {API_KEY_HEADER} header: this server requires an API key")
        given_bytes = given.encode()
        identity = None
        for secret, name in keys.items():  # compare with every key, in constant time each
            if hmac.compare_digest(secret.encode(), given_bytes):
                identity = name
        if identity is None:
            raise NotAuthorizedException(f"invalid API key in the {API_KEY_HEADER} header")
        return AuthenticationResult(user=identity, auth=None)


def auth_middleware() -> DefineMiddleware:
    return DefineMiddleware(ApiKeyMiddleware, exclude=PUBLIC_PATHS)
