"""Python SDK of the clearing engine's platform API: the client generated from the server's
``/openapi.json`` (``generate.sh``) with request signing built in (see README.md)."""

from .client import GENERATED_PACKAGE, Clearing, Operations, Reply, operator_client, signed_client
from .signing import PlatformSignature, canonical, sign
from .webhooks import verify_webhook

__all__ = [
    "GENERATED_PACKAGE",
    "Clearing",
    "Operations",
    "PlatformSignature",
    "Reply",
    "canonical",
    "operator_client",
    "sign",
    "signed_client",
    "verify_webhook",
]
