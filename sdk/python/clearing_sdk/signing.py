"""Platform request signing (API.md, "Authentication"), as an ``httpx.Auth``.

Every ``/v1`` request carries ``X-Platform-Id``, ``X-Timestamp`` (unix seconds), ``X-Nonce``
(16 to 64 characters ``[A-Za-z0-9]``, each used once) and ``X-Signature``::

    canonical = METHOD "\\n" PATH_AND_QUERY "\\n" TIMESTAMP "\\n" NONCE "\\n" hex(SHA256(body))
    X-Signature = hex(HMAC-SHA256(secret, canonical))

``PlatformSignature`` computes them for each request just before it is sent, over the exact
bytes of its body and the exact path and query on the wire, so a caller never signs by hand.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Generator

import httpx


def canonical(method: str, path_and_query: str, timestamp: str, nonce: str, body: bytes) -> str:
    """The string a platform signs (the same as ``gateway::auth::canonical``)."""
    return f"{method}\n{path_and_query}\n{timestamp}\n{nonce}\n{hashlib.sha256(body).hexdigest()}"


def sign(secret: str, method: str, path_and_query: str, timestamp: str, nonce: str, body: bytes) -> str:
    """hex(HMAC-SHA256(secret, canonical)): the value of ``X-Signature``."""
    message = canonical(method, path_and_query, timestamp, nonce, body).encode("utf-8")
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def new_nonce() -> str:
    """32 random hexadecimal characters: within the 16 to 64 ``[A-Za-z0-9]`` the server takes."""
    return secrets.token_hex(16)


class PlatformSignature(httpx.Auth):
    """Signs every request as the platform ``platform_id`` with its ``secret``.

    Pass it as httpx's ``auth`` (the generated client takes ``httpx_args={"auth": ...}``).
    ``clock`` returns unix seconds (the server refuses timestamps more than 300 s off its own).
    """

    # httpx reads a streamed body before calling ``auth_flow`` so that it can be hashed.
    requires_request_body = True

    def __init__(self, platform_id: str, secret: str, clock: Callable[[], float] = time.time) -> None:
        if not platform_id or not secret:
            raise ValueError("a platform id and its secret are both needed")
        self.platform_id = platform_id
        self._secret = secret
        self._clock = clock

    def __repr__(self) -> str:  # never show the secret
        return f"PlatformSignature(platform_id={self.platform_id!r})"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        timestamp = str(int(self._clock()))
        nonce = new_nonce()
        # raw_path is the path and the query exactly as they go on the wire.
        path_and_query = request.url.raw_path.decode("ascii")
        signature = sign(self._secret, request.method, path_and_query, timestamp, nonce, request.content)
        request.headers["X-Platform-Id"] = self.platform_id
        request.headers["X-Timestamp"] = timestamp
        request.headers["X-Nonce"] = nonce
        request.headers["X-Signature"] = signature
        yield request
