"""Schemathesis hooks: sign every request the way a platform does (API.md "Authentication").

The run is given its credentials by the environment (never by a file in the repository):
  CONTRACT_PLATFORM_ID      the platform the requests are signed as (X-Platform-Id)
  CONTRACT_PLATFORM_SECRET  that platform's secret (the HMAC key)
  CONTRACT_ADMIN_TOKEN      the operator token (Authorization: Bearer) for /admin and /sim

The signature is computed over the bytes actually sent, after Schemathesis has serialised the
body, by a `requests` auth callable (it sees the prepared request): canonical =
METHOD \n PATH_AND_QUERY \n TIMESTAMP \n NONCE \n hex(SHA256(body)), X-Signature =
hex(HMAC-SHA256(secret, canonical)), exactly as tests/support/mod.rs `sign` does. Only what the
operation's `security` names is added, so the `ignored_auth` check's probes (sent without this
hook) still go out without credentials and must be refused.
"""

import hashlib
import hmac
import os
import re
import secrets
import string
import time

import schemathesis

_ALPHABET = string.ascii_letters + string.digits


def _nonce() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(32))


class PlatformSignature:
    """A `requests` auth: adds X-Platform-Id, X-Timestamp, X-Nonce and X-Signature."""

    def __init__(self, platform_id: str, secret: str, operator_token: str | None):
        self.platform_id = platform_id
        self.secret = secret.encode()
        self.operator_token = operator_token

    def __call__(self, request):
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        timestamp = str(int(time.time()))
        nonce = _nonce()
        canonical = "\n".join([request.method, request.path_url, timestamp, nonce, hashlib.sha256(body).hexdigest()])
        request.headers["X-Platform-Id"] = self.platform_id
        request.headers["X-Timestamp"] = timestamp
        request.headers["X-Nonce"] = nonce
        request.headers["X-Signature"] = hmac.new(self.secret, canonical.encode(), hashlib.sha256).hexdigest()
        return request


class OperatorToken:
    """A `requests` auth: the operator's bearer token."""

    def __init__(self, token: str):
        self.token = token

    def __call__(self, request):
        request.headers["Authorization"] = f"Bearer {self.token}"
        return request


def _schemes(case) -> set[str]:
    security = case.operation.definition.raw.get("security")
    if security is None:
        security = case.operation.schema.raw_schema.get("security", [])
    return {name for requirement in security for name in requirement}


def _tests_the_credentials(case) -> bool:
    """Whether the case is one of Schemathesis' tests of a missing or wrong security header: it
    must go out as generated (unsigned), and the server must refuse it."""
    data = getattr(getattr(getattr(case, "meta", None), "phase", None), "data", None)
    parameter = getattr(data, "parameter", None)
    return isinstance(parameter, str) and parameter.lower() in {"x-signature", "authorization", "x-channel-signature"}


@schemathesis.hook
def before_call(context, case, kwargs):
    if _tests_the_credentials(case):
        return
    schemes = _schemes(case)
    if "platform_signature" in schemes:
        kwargs["auth"] = PlatformSignature(
            os.environ["CONTRACT_PLATFORM_ID"], os.environ["CONTRACT_PLATFORM_SECRET"], os.environ.get("CONTRACT_ADMIN_TOKEN")
        )
    elif "operator_token" in schemes:
        kwargs["auth"] = OperatorToken(os.environ["CONTRACT_ADMIN_TOKEN"])
    else:
        return
    # The credentials are the run's own, not generated: the `ignored_auth` check then probes the
    # operation without them and with wrong ones, and expects a refusal.
    object.__setattr__(case, "_has_explicit_auth", True)


# Check digits. The document gives an id number's and a card number's shape (a pattern); the
# check digit (GB 11643 / GB 32100, Luhn) and the birth date inside a resident ID are not
# expressible in JSON Schema, so a generated value of the right shape would be refused for its
# check digit and say nothing about the operation. A value of the documented shape is replaced
# by a valid one (a value of another shape, which a negative test sends, is left as it is).
_RESIDENT_ID = "11010519491231002X"
_CREDIT_CODE = "91110108MA01ABCD3N"  # recomputed below so its check character is right
_CREDIT_CHARSET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_CREDIT_WEIGHTS = [1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28]


def _credit_code(first17: str) -> str:
    total = sum(_CREDIT_CHARSET.index(c) * w for c, w in zip(first17, _CREDIT_WEIGHTS))
    return first17 + _CREDIT_CHARSET[(31 - total % 31) % 31]


def _luhn(digits: str) -> str:
    total = 0
    for i, d in enumerate(reversed(digits)):
        n = int(d)
        if i % 2 == 0:
            n *= 2
            if n > 9:
                n -= 9
        total += n
    return digits + str((10 - total % 10) % 10)


_ID_SHAPE = re.compile(r"^[0-9A-Za-z]{18}$")
_CARD_SHAPE = re.compile(r"^[0-9]{12,19}$")


def _fix(body):
    if isinstance(body, list):
        for item in body:
            _fix(item)
        return
    if not isinstance(body, dict):
        return
    number = body.get("id_number")
    if isinstance(number, str) and _ID_SHAPE.fullmatch(number):
        body["id_number"] = _credit_code(_CREDIT_CODE[:17]) if body.get("type") == "enterprise" else _RESIDENT_ID
    card = body.get("card_no")
    if isinstance(card, str) and _CARD_SHAPE.fullmatch(card):
        body["card_no"] = _luhn(card[:-1])
    for value in body.values():
        if isinstance(value, (dict, list)):
            _fix(value)


@schemathesis.hook
def map_body(context, body):
    _fix(body)
    return body


@schemathesis.hook
def map_path_parameters(context, path_parameters):
    _fix(path_parameters)
    return path_parameters
