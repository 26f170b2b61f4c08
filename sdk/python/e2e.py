"""End-to-end run of the generated SDK against a real server (tests/sdk_python.rs runs it).

    python e2e.py [all|wrong-secret|webhook]

Environment: CLEARING_URL (the server's base URL), CLEARING_PLATFORM_ID and CLEARING_SECRET (a
platform the operator created), CLEARING_ADMIN_TOKEN (the operator's token: the bank simulator's
card statements need it, as a card holder reading a micro-deposit would). PYTHONPATH holds the
generated package (generate.sh) and sdk/python.

``all`` drives members, accounts, a recharge through the bank simulator, a guarantee (escrow)
payment confirmed in two stages, a refund and a withdrawal to a verified card, checking balances
through the SDK after each step; then a wrong secret. ``wrong-secret`` only checks that a wrong
secret is refused with 401 and changes nothing. ``webhook`` sets the platform's webhook to a
receiver of its own (the server must allow loopback webhooks), recharges an account and checks
every delivery with ``verify_webhook`` (and that another secret, a changed body and an old
timestamp do not verify). Each step prints a line; any failed check exits
non-zero with what was expected and what came. The last line of ``all`` is a JSON summary that
the Rust test checks again with its own client.
"""

from __future__ import annotations

import json
import os
import sys
import time
from decimal import Decimal

import httpx

from clearing_sdk import Clearing, Reply, verify_webhook

HOLDER = ("Zhang San", "11010519491231002X")


class CheckFailed(Exception):
    pass


def check(condition: bool, what: str, reply: Reply | None = None) -> None:
    if not condition:
        detail = f" (status {reply.status}: {reply.data})" if reply is not None else ""
        raise CheckFailed(f"{what}{detail}")


def step(name: str) -> None:
    print(f"step: {name}", flush=True)


def luhn_card_no(prefix: str) -> str:
    """A 16-digit card number with a valid Luhn check digit."""
    digits = [int(d) for d in prefix]
    total = 0
    for index, digit in enumerate(reversed(digits)):
        doubled = digit * 2 if index % 2 == 0 else digit
        total += doubled - 9 if doubled > 9 else doubled
    return prefix + str((10 - total % 10) % 10)


# A card of its own, so that runs against one server read their own micro-deposit.
CARD_NO = luhn_card_no(f"62{time.time_ns() % 10**13:013d}")


def money(value: Decimal) -> str:
    return f"{value:.2f}"


class Run:
    def __init__(self) -> None:
        self.url = os.environ["CLEARING_URL"]
        self.platform_id = os.environ["CLEARING_PLATFORM_ID"]
        self.secret = os.environ["CLEARING_SECRET"]
        self.token = os.environ.get("CLEARING_ADMIN_TOKEN", "")
        self.sdk = Clearing.platform(self.url, self.platform_id, self.secret)

    def created(self, operation: str, body: dict, status: int = 201, **parameters: str) -> Reply:
        reply = self.sdk.call(operation, body, **parameters)
        check(reply.status == status, f"{operation} answers {status}", reply)
        check(reply.parsed is not None, f"{operation}: the generated client parsed the answer", reply)
        return reply

    def balances(self, account: str) -> tuple[str, str, str, str]:
        reply = self.sdk.call("show_account", account_id=account)
        check(reply.status == 200, "show_account answers 200", reply)
        b = reply.data["balances"]
        return (b["available"], b["withdrawable"], b["frozen"], b["unsettled"])

    def expect_balances(self, account: str, expected: tuple[str, str, str, str], when: str) -> None:
        shown = self.balances(account)
        check(shown == expected, f"{when}: balances (available, withdrawable, frozen, unsettled) of {account} are {expected}, not {shown}")

    def wait_order(self, order_id: str, status: str) -> dict:
        deadline = time.monotonic() + 30
        while True:
            reply = self.sdk.call("show_order", order_id=order_id)
            check(reply.status == 200, "show_order answers 200", reply)
            if reply.data["status"] == status:
                return reply.data
            check(
                reply.data["status"] not in ("failed", "cancelled") or status in ("failed", "cancelled"),
                f"order {order_id} became {reply.data['status']}, not {status}",
                reply,
            )
            check(time.monotonic() < deadline, f"order {order_id} never became {status}", reply)
            time.sleep(0.02)

    def micro_deposit(self, card_no: str) -> str:
        operator = Clearing.operator(self.url, self.token)
        deadline = time.monotonic() + 30
        while True:
            reply = operator.call("card_transactions", card_no=card_no)
            check(reply.status == 200, "the simulator shows the card's statement", reply)
            for line in reply.data["transactions"]:
                if line["remark"] == "card verification deposit":
                    return line["amount"]
            check(time.monotonic() < deadline, f"no micro-deposit on {card_no}", reply)
            time.sleep(0.02)

    def all(self) -> dict:
        step("whoami")
        reply = self.sdk.call("whoami")
        check(reply.status == 200 and reply.data["platform_id"] == self.platform_id, "the signed client is the platform", reply)

        step("members and accounts")

        def member(number: str, name: str) -> str:
            body = {"out_order_no": number, "type": "individual", "name": name, "id_number": HOLDER[1], "phone": "13800138000"}
            return self.created("create_member", body).data["member_id"]

        def account(number: str, member_id: str) -> str:
            return self.created("open_account", {"out_order_no": number, "member_id": member_id, "currency": "CNY"}).data["account_id"]

        payer = account("e2e-acct-payer", member("e2e-payer", HOLDER[0]))
        payee = account("e2e-acct-payee", member("e2e-payee", "Li Si"))
        zero = ("0.00", "0.00", "0.00", "0.00")
        self.expect_balances(payer, zero, "a new account")

        step("recharge 1000.00 through the bank simulator")
        body = {"out_order_no": "e2e-r-1", "account_id": payer, "amount": "1000.00", "currency": "CNY"}
        recharge = self.created("recharge", body)
        check(recharge.data["status"] == "pending" and not recharge.replayed, "a recharge is pending until the bank confirms", recharge)
        again = self.sdk.call("recharge", body)
        check(again.status == 201 and again.replayed and again.data == recharge.data, "the same out_order_no is an idempotent replay", again)
        self.wait_order(recharge.data["order_id"], "succeeded")
        self.expect_balances(payer, ("1000.00", "1000.00", "0.00", "0.00"), "after the recharge")

        step("guarantee payment 300.00 into escrow")
        body = {
            "out_order_no": "e2e-p-1",
            "payer_account_id": payer,
            "mode": "guarantee",
            "amount": "300.00",
            "currency": "CNY",
            "payees": [{"account_id": payee, "amount": "300.00"}],
            "description": "SDK end to end",
        }
        payment = self.created("create_payment", body)
        check(payment.data["status"] == "held" and payment.data["kind"] == "payment", "a guarantee payment is held", payment)
        order = payment.data["order_id"]
        self.expect_balances(payer, ("700.00", "700.00", "0.00", "0.00"), "after the guarantee payment")
        self.expect_balances(payee, zero, "escrow is nobody's balance yet")

        step("confirm 100.00, then the rest")
        staged = self.created(
            "confirm_payment", {"out_order_no": "e2e-c-1", "releases": [{"account_id": payee, "amount": "100.00"}]}, status=200, order_id=order
        )
        check(staged.data["status"] == "held", "a partial release leaves the rest held", staged)
        self.expect_balances(payee, ("100.00", "0.00", "0.00", "100.00"), "after the first release")
        over = self.sdk.call("confirm_payment", {"out_order_no": "e2e-c-2", "releases": [{"account_id": payee, "amount": "200.01"}]}, order_id=order)
        check(over.status == 422 and over.error_code == "exceeds_held_amount", "releasing more than is held is refused", over)
        done = self.created("confirm_payment", {"out_order_no": "e2e-c-3"}, status=200, order_id=order)
        check(done.data["status"] == "succeeded", "nothing held any more", done)
        self.expect_balances(payee, ("300.00", "0.00", "0.00", "300.00"), "after the confirm: income is unsettled")
        self.expect_balances(payer, ("700.00", "700.00", "0.00", "0.00"), "the payer after the confirm")

        step("refund 50.00")
        refund = self.created("refund", {"out_order_no": "e2e-rf-1", "payment_order_id": order, "amount": "50.00", "payee_account_id": payee})
        check(refund.data["kind"] == "refund" and refund.data["status"] == "succeeded", "a refund succeeds at once", refund)
        too_much = self.sdk.call("refund", {"out_order_no": "e2e-rf-2", "payment_order_id": order, "amount": "250.01", "payee_account_id": payee})
        check(too_much.status == 422 and too_much.error_code == "exceeds_refundable_amount", "refunds never exceed what was released", too_much)
        shown = self.sdk.call("show_order", order_id=order)
        check(shown.data["status"] == "partially_refunded" and shown.data["refunded_amount"] == "50.00", "the payment shows the refund", shown)
        # A query string is signed too (path and query as sent).
        listed = self.sdk.call("list_orders", kind="payment", account_id=payer, limit=10)
        check(listed.status == 200 and [o["order_id"] for o in listed.data["orders"]] == [order], "the payer's payments are listed", listed)
        self.expect_balances(payer, ("750.00", "750.00", "0.00", "0.00"), "the payer after the refund")
        self.expect_balances(payee, ("250.00", "0.00", "0.00", "250.00"), "the payee after the refund")

        step("insufficient funds change nothing")
        short = self.sdk.call(
            "create_payment",
            {
                "out_order_no": "e2e-p-2",
                "payer_account_id": payer,
                "mode": "balance",
                "amount": "750.01",
                "currency": "CNY",
                "payees": [{"account_id": payee, "amount": "750.01"}],
            },
        )
        check(short.status == 422 and short.error_code == "insufficient_funds", "a payment over the balance is refused", short)
        check(type(short.parsed).__name__ != "OrderView" and short.parsed is not None, "the error is parsed as the document's error body", short)
        self.expect_balances(payer, ("750.00", "750.00", "0.00", "0.00"), "after the refused payment")

        step("bind and verify a card")
        card = self.created(
            "bind_card",
            {"out_order_no": "e2e-card-1", "card_no": CARD_NO, "holder_name": HOLDER[0], "id_number": HOLDER[1], "phone": "13800138000"},
            account_id=payer,
        )
        check(card.data["status"] == "pending_verification", "a new card waits for its micro-deposit", card)
        card_id = card.data["card_id"]
        verified = self.created("verify_card", {"amount": self.micro_deposit(CARD_NO)}, status=200, account_id=payer, card_id=card_id)
        check(verified.data["status"] == "verified", "the micro-deposit verifies the card", verified)

        step("withdraw 100.00 to the card")
        withdrawal = self.created(
            "withdraw", {"out_order_no": "e2e-w-1", "account_id": payer, "card_id": card_id, "amount": "100.00", "currency": "CNY", "arrival": "realtime"}
        )
        check(withdrawal.data["status"] == "processing" and withdrawal.data.get("channel"), "a withdrawal is processing on a routed channel", withdrawal)
        fee = Decimal(withdrawal.data["fee"])
        left = money(Decimal("750.00") - Decimal("100.00") - fee)
        self.expect_balances(payer, (left, left, "0.00", "0.00"), "amount and fee leave at once")
        finished = self.wait_order(withdrawal.data["order_id"], "succeeded")
        self.expect_balances(payer, (left, left, "0.00", "0.00"), "after the withdrawal succeeded")
        operator = Clearing.operator(self.url, self.token)
        statement = operator.call("card_transactions", card_no=CARD_NO)
        paid = [line for line in statement.data["transactions"] if line["amount"] == "100.00"]
        check(len(paid) == 1, "the card received the amount once", statement)

        step("a wrong secret")
        self.wrong_secret(payer)

        return {
            "payer": payer,
            "payee": payee,
            "withdrawal": finished["order_id"],
            "fee": money(fee),
            "payer_balances": list(self.balances(payer)),
            "payee_balances": list(self.balances(payee)),
        }

    def webhook(self) -> dict:
        """Receives the platform's webhook deliveries and verifies each with the SDK."""
        import http.server
        import threading

        received: list[tuple[dict[str, str], bytes]] = []

        class Receiver(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the standard library's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                received.append((dict(self.headers.items()), body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
        threading.Thread(target=receiver.serve_forever, daemon=True).start()
        try:
            step("set the webhook")
            url = f"http://127.0.0.1:{receiver.server_address[1]}/events"
            reply = self.sdk.call("set_webhook", {"url": url})
            check(reply.status == 200, "the webhook is set", reply)
            # Deliveries are signed with the webhook's own secret, never the API secret.
            secret = reply.data["signing_secret"]
            check(secret.startswith("whsec_") and reply.data["signed_with"] == "webhook_secret", "the webhook has its own secret", reply)
            step("a recharge's events")
            body = {"out_order_no": "e2e-hook-m1", "type": "individual", "name": HOLDER[0], "id_number": HOLDER[1], "phone": "13800138000"}
            member = self.created("create_member", body).data["member_id"]
            account = self.created("open_account", {"out_order_no": "e2e-hook-a1", "member_id": member, "currency": "CNY"}).data["account_id"]
            recharge = {"out_order_no": "e2e-hook-r1", "account_id": account, "amount": "5.00", "currency": "CNY"}
            order = self.created("create_recharge", recharge).data["order_id"]
            deadline = time.time() + 30
            while time.time() < deadline and not any(b'"order.succeeded"' in delivered for _, delivered in received):
                time.sleep(0.05)
            check(any(b'"order.succeeded"' in delivered for _, delivered in received), "the recharge's success was delivered")
            step("verify each delivery")
            for headers, delivered in list(received):
                check(verify_webhook(secret, delivered, headers), "a delivery verifies with the webhook secret")
                check(not verify_webhook(self.secret, delivered, headers), "a delivery does not verify with the API secret")
                check(not verify_webhook("0" * 64, delivered, headers), "a delivery does not verify with another secret")
                check(not verify_webhook(secret, delivered + b" ", headers), "a changed body does not verify")
                signed_at = int(headers["X-Clearing-Signature"].split(",")[0].removeprefix("t="))
                check(not verify_webhook(secret, delivered, headers, clock=lambda at=signed_at: at + 301), "a delivery 301 s old does not verify")
                check(verify_webhook(secret, delivered, headers, clock=lambda at=signed_at: at + 299), "one 299 s old does")
            events = [json.loads(delivered) for _, delivered in received]
            ours = [event for event in events if event["data"]["order_id"] == order]
            check({event["type"] for event in ours} >= {"order.pending", "order.succeeded"}, "the recharge's creation and success were delivered")
            step("hostile signature headers")
            headers, delivered = received[0]
            for hostile in ("t=\u00b2\u00b2,v1=" + "0" * 64, "t=" + "9" * 5000 + ",v1=" + "0" * 64, "t=1,v1=\u00e9" * 3, "", "v1=,t="):
                check(not verify_webhook(secret, delivered, {"X-Clearing-Signature": hostile}), f"a hostile header is refused: {hostile[:40]!r}")
            try:
                verify_webhook(secret, delivered.decode(), headers)  # type: ignore[arg-type]
                check(False, "a text body is refused")
            except TypeError:
                pass
            step("a rotated webhook secret's overlap")
            rotated = self.sdk.call("rotate_webhook_secret", {"overlap_seconds": 3600, "from_version": reply.data["signing_secret_version"]})
            check(rotated.status == 200 and rotated.data["previous_signing_secret_version"] == 1, "the webhook secret is rotated", rotated)
            new_secret = rotated.data["signing_secret"]
            seen = len(received)
            recharge = {"out_order_no": "e2e-hook-r2", "account_id": account, "amount": "1.00", "currency": "CNY"}
            second = self.created("create_recharge", recharge).data["order_id"]
            deadline = time.time() + 30
            while time.time() < deadline and not any(second.encode() in delivered and b'"order.succeeded"' in delivered for _, delivered in received[seen:]):
                time.sleep(0.05)
            later = [(headers, delivered) for headers, delivered in received[seen:] if second.encode() in delivered]
            check(bool(later), "the second recharge's events were delivered")
            for headers, delivered in later:
                check("X-Clearing-Signature-Previous" in headers, "a delivery during the overlap carries the previous secret's signature")
                check(verify_webhook(new_secret, delivered, headers), "it verifies with the new secret")
                check(verify_webhook(secret, delivered, headers), "and with the previous one, for a receiver not yet changed")
                current_only = {"X-Clearing-Signature": headers["X-Clearing-Signature"]}
                check(not verify_webhook(secret, delivered, current_only), "the current header alone is the new secret's")
            return {"deliveries": len(received), "order": order, "types": sorted({event["type"] for event in ours}), "rotated": len(later)}
        finally:
            receiver.shutdown()

    def wrong_secret(self, account: str | None = None) -> str:
        """Checks that a wrong secret changes nothing; returns the member the right secret then created."""
        wrong = Clearing.platform(self.url, self.platform_id, "0" * 64)
        reply = wrong.call("whoami")
        check(reply.status == 401 and reply.error_code == "unauthenticated", "a wrong secret is refused", reply)
        check(type(reply.parsed).__name__ != "WhoamiResponse200" and reply.parsed is not None, "the 401 is parsed as the document's error body", reply)
        body = {"out_order_no": "e2e-wrong-1", "type": "individual", "name": HOLDER[0], "id_number": HOLDER[1], "phone": "13800138000"}
        refused = wrong.call("create_member", body)
        check(refused.status == 401 and refused.error_code == "unauthenticated", "a signed POST with a wrong secret is refused", refused)
        # Had the refused request created the member, this would be an idempotent replay.
        created = self.sdk.call("create_member", body)
        check(created.status == 201 and not created.replayed, "the refused request created nothing (and the right secret works)", created)
        if account is not None:
            before = self.balances(account)
            moved = wrong.call("withdraw", {"out_order_no": "e2e-wrong-2", "account_id": account, "card_id": "card_1", "amount": "1.00", "currency": "CNY"})
            check(moved.status == 401, "a wrong secret moves no money", moved)
            check(self.balances(account) == before, "the balances did not change")
        # A right secret with a clock an hour off is refused too: the timestamp is signed.
        stale = Clearing.platform(self.url, self.platform_id, self.secret, clock=lambda: time.time() - 3600)
        late = stale.call("whoami")
        check(late.status == 401 and late.error_code == "timestamp_out_of_window", "a timestamp an hour old is refused", late)
        return created.data["member_id"]


def a_code_added_later_is_a_reply() -> None:
    """An error code the server added after the SDK was generated comes back as a ``Reply``
    whose model holds it (``call`` raised before session 64, when the document's codes were an
    enum the generated model refused; since session 65 the code is a string)."""
    step("an error code this SDK does not know")
    added = {"error": {"code": "a_code_added_later", "message": "new", "param": None}}
    transport = httpx.MockTransport(lambda request: httpx.Response(400, json=added))
    client = Clearing.platform("http://127.0.0.1:9", "plt_1", "secret")
    client.client.set_httpx_client(httpx.Client(base_url="http://127.0.0.1:9", transport=transport))
    reply = client.call("whoami")
    check(reply.status == 400 and reply.error_code == "a_code_added_later", "an unknown code is answered as a reply", reply)
    parsed = reply.parsed
    check(parsed is not None and parsed.error.code == "a_code_added_later", "the generated model takes a code added later", reply)


def main() -> int:
    mode = sys.argv[1] if len(sys.argv) > 1 else "all"
    run = Run()
    try:
        if mode == "all":
            a_code_added_later_is_a_reply()
            summary = run.all()
            print(json.dumps(summary), flush=True)
        elif mode == "webhook":
            print(json.dumps(run.webhook()), flush=True)
        elif mode == "wrong-secret":
            step("a wrong secret")
            member = run.wrong_secret()
            print(json.dumps({"wrong_secret": "refused", "member_id": member}), flush=True)
        else:
            print(f"unknown mode {mode!r}: all, wrong-secret or webhook", file=sys.stderr)
            return 2
    except CheckFailed as failed:
        print(f"FAILED: {failed}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
