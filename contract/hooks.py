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

import datetime
import hashlib
import itertools
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


_CREDENTIALS = {"x-signature", "authorization", "x-channel-signature"}


def _names_a_credential(value) -> bool:
    if isinstance(value, str):
        return value.lower() in _CREDENTIALS
    if isinstance(value, (list, tuple)):
        return any(_names_a_credential(item) for item in value)
    return False


def _tests_the_credentials(case) -> bool:
    """Whether the case is one of Schemathesis' tests of a missing or wrong security header: it
    must go out as generated (unsigned), and the server must refuse it.

    The coverage phase names the header it probes (`parameter`); the fuzzing and stateful phases
    record their changes as mutations instead (e.g. "header: violates `required` (was
    X-Signature)"), and a negative case may combine one with another (CI found a case whose
    query mutation vanished on the wire while the signing undid the dropped X-Signature: a valid
    request, rightly answered 200, reported as ST201). The only headers the document declares
    are the credentials, so a case made negative in its headers is sent unsigned as well (should a
    header parameter ever be declared, that rule would stop exercising its validation: narrow it
    then to the credentials' mutations)."""
    meta = getattr(case, "meta", None)
    data = getattr(getattr(meta, "phase", None), "data", None)
    if _names_a_credential(getattr(data, "parameter", None)):
        return True
    if not _negative(case):
        # A positive case is always signed (the rules below only describe negative ones).
        return False
    for mutation in getattr(data, "mutations", None) or ():
        location = getattr(mutation, "parameter_location", None)
        if str(getattr(location, "value", location)) != "header":
            continue
        if _names_a_credential(getattr(mutation, "parameter", None)) or _names_a_credential(getattr(mutation, "original_value", None)):
            return True
    components = getattr(meta, "components", None)
    if isinstance(components, dict):
        for location, info in components.items():
            mode = getattr(info, "mode", None)
            if str(getattr(location, "value", location)) == "header" and str(getattr(mode, "value", mode)).lower() == "negative":
                return True
    return False


@schemathesis.hook
def before_call(context, case, kwargs):
    _fix_case(case)
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


def _integers(value):
    """JSON Schema counts 3780.0 as an integer and Schemathesis sends such floats for integer
    fields; the server's integer fields (serde) refuse a number with a fraction part, as a client
    generated from the document (which types them integer) never sends one. Whole floats go out
    as integers; other values as they are."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**64:
        return int(value)
    if isinstance(value, list):
        return [_integers(v) for v in value]
    if isinstance(value, dict):
        return {k: _integers(v) for k, v in value.items()}
    return value


def _distinct_payees(body):
    """A payer cannot pay itself and an account is a payee or split once per order: rules
    across fields JSON Schema cannot say. Legs naming the payer or an account named before get
    fresh accounts."""
    payer = body.get("payer_account_id")
    orders = body.get("orders") if isinstance(body.get("orders"), list) else [body]
    for order in orders:
        if not isinstance(order, dict):
            continue
        seen = {payer}
        fresh = 1000
        for key in ("payees", "splits"):
            legs = order.get(key)
            for leg in legs if isinstance(legs, list) else []:
                if isinstance(leg, dict) and isinstance(leg.get("account_id"), str) and leg["account_id"] in seen:
                    while f"acc_{fresh}" in seen:
                        fresh += 1
                    leg["account_id"] = f"acc_{fresh}"
                if isinstance(leg, dict):
                    seen.add(leg.get("account_id"))


def _cents(text):
    if not isinstance(text, str) or not re.fullmatch(r"[0-9]+(\.[0-9]{1,2})?", text):
        return None
    whole, _, fraction = text.partition(".")
    return int(whole) * 100 + int((fraction + "00")[:2])


def _legs_fit(order):
    """Payees and splits together are at most 32 (each list's bound alone is in the document)."""
    payees, splits = order.get("payees"), order.get("splits")
    if isinstance(payees, list) and isinstance(splits, list) and len(payees) + len(splits) > 32:
        del splits[max(0, 32 - len(payees)):]


def _summed(order):
    """Payees and splits add up to the order's amount (a rule across fields): the amount
    becomes their sum."""
    legs = [leg for key in ("payees", "splits") for leg in (order.get(key) or []) if isinstance(leg, dict)]
    cents = [_cents(leg.get("amount")) for leg in legs]
    if legs and all(c is not None for c in cents) and sum(cents) > 0:
        total = sum(cents)
        order["amount"] = f"{total // 100}.{total % 100:02d}"


def _consistent_rule(body):
    """With basis `count` a tier starts at a whole count (with `amount`, at an amount): JSON
    Schema cannot make one field's pattern depend on another's value."""
    tiers = body.get("tiers")
    if not isinstance(tiers, list) or not all(isinstance(t, dict) and isinstance(t.get("from"), str) and re.fullmatch(r"[0-9]+(\.[0-9]+)?", t["from"]) for t in tiers):
        return
    if body.get("basis") == "count":
        for tier in tiers:
            tier["from"] = str(min(int(tier["from"].split(".")[0]), 2**32 - 1))
    # Tiers ascend from 0 (the first starts at 0, each later one higher), and no tier's rate
    # with the service fee passes 100 %.
    tiers.sort(key=lambda t: float(t["from"]))
    kept = []
    for tier in tiers:
        if not kept or float(tier["from"]) > float(kept[-1]["from"]):
            kept.append(tier)
    if kept:
        kept[0]["from"] = "0"
    tiers[:] = kept
    fee = body.get("service_fee_rate")
    if isinstance(fee, str) and any(isinstance(t.get("rate"), str) and _fraction(t["rate"]) + _fraction(fee) > 1 for t in tiers):
        body["service_fee_rate"] = "0"


def _fraction(text):
    try:
        return float(text)
    except ValueError:
        return 0.0


def _ordered_channel(body):
    """A channel's minimum is at most its maximum and its window starts at or before its end
    (the server refuses inverted bounds): cross-field rules JSON Schema cannot say."""
    def minor(text):
        try:
            return float(text)
        except (TypeError, ValueError):
            return None
    for low, high in (("fee_min", "fee_max"), ("order_min", "order_max")):
        a, b = minor(body.get(low)), minor(body.get(high))
        if a is not None and b is not None and a > b:
            body[low], body[high] = body[high], body[low]
    window = body.get("window")
    if isinstance(window, str) and "-" in window:
        start, end = window.split("-", 1)
        if start > end:
            body["window"] = f"{end}-{start}"


_CHANNEL_NUMBERS = itertools.count(40000)


def _distinct_refs(body):
    """A statement names each bank reference once (the server refuses a file naming one twice:
    JSON Schema cannot say it): each line's reference gets its line number in front, within the
    100 characters a reference may have."""
    text = body.get("file")
    if not isinstance(text, str):
        return
    lines = text.split("\n")
    for number in range(1, len(lines)):
        if "," in lines[number]:
            reference, rest = lines[number].split(",", 1)
            lines[number] = f"{number}_{reference}"[:100] + "," + rest
    body["file"] = "\n".join(lines)


def _fresh_channel(body):
    if isinstance(body.get("id"), int):
        number = next(_CHANNEL_NUMBERS)
        body["id"] = number
        if isinstance(body.get("name"), str):
            body["name"] = f"contract_{number}"


def _future(body):
    """An expiry is in the future (the server refuses a past one): a generated time in the past
    becomes the same time of day a year from now."""
    at = body.get("expires_at")
    if isinstance(at, str):
        try:
            when = datetime.datetime.fromisoformat(at.replace("Z", "+00:00"))
        except ValueError:
            return
        now = datetime.datetime.now(datetime.timezone.utc)
        if when.tzinfo is not None and when <= now:
            body["expires_at"] = (now + datetime.timedelta(days=365)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _negative(case) -> bool:
    """Whether Schemathesis made the case to break the schema: such a case goes out as made (a
    fix below could turn it into a valid request, which the server would rightly take)."""
    mode = getattr(getattr(getattr(case, "meta", None), "generation", None), "mode", None)
    return str(getattr(mode, "value", mode)).lower() == "negative"


def _fix_case(case):
    path = case.operation.path
    if isinstance(case.path_parameters, dict) and path.endswith("/rotate-secret"):
        # The run signs as one platform; rotating its secret would lock the run out. Schemathesis'
        # rotations go to the decoy platform made for them.
        if case.path_parameters.get("platform_id") == os.environ["CONTRACT_PLATFORM_ID"]:
            case.path_parameters["platform_id"] = os.environ["CONTRACT_DECOY_PLATFORM_ID"]
    if _negative(case):
        return
    if isinstance(case.body, (dict, list)):
        case.body = _integers(case.body)
        _fix(case.body)
    body = case.body if isinstance(case.body, dict) else None
    if body is not None:
        if path in ("/v1/payments", "/v1/batch-payments") or (path == "/v1/h5/sessions" and isinstance(body.get("payment"), dict)):
            payment = body["payment"] if path == "/v1/h5/sessions" else body
            _distinct_payees(payment)
            for order in payment.get("orders") if isinstance(payment.get("orders"), list) else [payment]:
                if isinstance(order, dict):
                    _legs_fit(order)
                    _summed(order)
        if path.endswith("/settlement-rule"):
            _consistent_rule(body)
            # A commission has receivers, open accounts of the platform in the rule's currency:
            # the rule goes to the run's platform, whose account CONTRACT_RECEIVER_ACCOUNT (CNY)
            # receives.
            if isinstance(body.get("receivers"), list) and isinstance(case.path_parameters, dict):
                case.path_parameters["platform_id"] = os.environ["CONTRACT_PLATFORM_ID"]
                body["currency"] = "CNY"
                body["receivers"] = [{"account_id": os.environ["CONTRACT_RECEIVER_ACCOUNT"], "share": 1}]
        if path == "/admin/reconciliations":
            _distinct_refs(body)
        if path == "/admin/channels" and case.method.upper() == "POST":
            _ordered_channel(body)
            # A new channel needs an unused number and name.
            _fresh_channel(body)
        if path == "/admin/channels/{name}":
            # A change is checked against the channel's current bounds, which the generator does
            # not know: the bounds and the window are left as they are (tests/channels*.rs
            # change them).
            for key in ("fee_min", "fee_max", "order_min", "order_max", "window"):
                body.pop(key, None)
        if path == "/v1/freezes":
            _future(body)
            # A reason is at most 256 bytes of UTF-8 (the ledger's rule, kept in bytes so old
            # journals replay exactly); JSON Schema's maxLength counts characters.
            reason = body.get("reason")
            if isinstance(reason, str) and len(reason.encode()) > 256:
                cut = reason.encode()[:256].decode(errors="ignore")
                body["reason"] = cut or "x"
        if path == "/v1/payments" and body.get("funding") != "channel":
            # A channel is named only for money coming in through one (funding "channel").
            body.pop("channel", None)
        if path == "/v1/h5/sessions":
            # A cashier session carries its payment, an agreement session its agreement.
            # A cashier session carries its payment and an agreement session its agreement, and
            # no other session carries either.
            purpose = body.get("purpose")
            if (purpose == "cashier" and not isinstance(body.get("payment"), dict)) or (purpose == "agreement" and not isinstance(body.get("agreement"), dict)):
                body["purpose"] = purpose = "wallet"
            if purpose != "cashier":
                body.pop("payment", None)
            if purpose != "agreement":
                body.pop("agreement", None)
    if isinstance(case.query, dict) and "cursor" in case.query:
        # Cursors are opaque: only one a page answered is valid (a made-up one is 400 naming
        # `cursor`, tested in tests/contract.rs); generated ones are left out.
        del case.query["cursor"]
    if isinstance(case.path_parameters, dict):
        _fix(case.path_parameters)
