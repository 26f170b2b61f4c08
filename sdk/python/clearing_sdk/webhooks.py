"""Verifying the webhook's deliveries (the document's ``webhooks.order_event``).

Each event is posted to the platform's webhook URL with::

    X-Clearing-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>

where ``secret`` is the webhook's signing secret (``signing_secret`` of ``GET /v1/webhook``, not
the API secret; a platform made before webhook secrets uses its API secret until it rotates one),
and, while a rotated secret's overlap lasts, the previous secret's signature in the same form in
``X-Clearing-Signature-Previous`` (for a receiver that has not deployed the new secret yet).
``verify_webhook`` checks either header against the receiver's secret over the exact body bytes
and refuses a timestamp more than ``tolerance_seconds`` from its clock, so a captured delivery
cannot be played again later. A receiver answers 2xx only to deliveries that verify, and
de-duplicates by ``event_id`` (deliveries are at least once).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Callable, Mapping

SIGNATURE_HEADER = "X-Clearing-Signature"
PREVIOUS_SIGNATURE_HEADER = "X-Clearing-Signature-Previous"


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """A header's value, whatever the case of its name in ``headers``."""
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return None


# What the server sends: ASCII digits (at most 12: unix seconds for millennia) and 64 lowercase
# hex digits. Anything else is refused before it is parsed, so a hostile header is a False,
# never an exception (a superscript digit, a 5,000-digit number, a non-ASCII signature).
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_SIGNATURE = re.compile(r"[0-9a-f]{64}")


def _verifies(secret: str, body: bytes, header: str, now: float, tolerance_seconds: int) -> bool:
    timestamp, signatures = None, []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and _TIMESTAMP.fullmatch(value):
            timestamp = int(value)
        elif key == "v1" and _SIGNATURE.fullmatch(value):
            signatures.append(value.encode("ascii"))
    if timestamp is None or not signatures or abs(now - timestamp) > tolerance_seconds:
        return False
    expected = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode("ascii") + body, hashlib.sha256).hexdigest().encode("ascii")
    return any(hmac.compare_digest(expected, signature) for signature in signatures)


def verify_webhook(
    secret: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    tolerance_seconds: int = 300,
    clock: Callable[[], float] = time.time,
) -> bool:
    """Whether a delivery's body was signed with ``secret`` within ``tolerance_seconds`` of now.

    ``headers`` is the request's headers (any mapping: names are matched without regard to
    case); ``body`` the exact bytes received, before any JSON parsing.
    """
    if not secret:
        raise ValueError("the webhook's signing secret is needed")
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise TypeError("body must be the exact bytes received (not text, not parsed JSON)")
    body = bytes(body)
    now = clock()
    for name in (SIGNATURE_HEADER, PREVIOUS_SIGNATURE_HEADER):
        header = _header(headers, name)
        if header is not None and _verifies(secret, body, header, now, tolerance_seconds):
            return True
    return False
