"""The one place that names operations for hand-written code.

Each friendly name maps to the operation's method and path, which API.md fixes (the contract:
"the names, paths, headers and error codes below are fixed"). The generated module that serves
an operation is found by that method and path (``clearing_sdk.client.Operations``), never by its
generated name, so a renamed operationId or tag in the document changes nothing here.
"""

ROUTES: dict[str, tuple[str, str]] = {
    "whoami": ("GET", "/v1/platform"),
    "create_member": ("POST", "/v1/members"),
    "open_account": ("POST", "/v1/accounts"),
    "show_account": ("GET", "/v1/accounts/{account_id}"),
    "list_entries": ("GET", "/v1/accounts/{account_id}/entries"),
    "close_account": ("POST", "/v1/accounts/{account_id}/close"),
    "set_payment_password": ("POST", "/v1/accounts/{account_id}/password"),
    "bind_card": ("POST", "/v1/accounts/{account_id}/cards"),
    "list_cards": ("GET", "/v1/accounts/{account_id}/cards"),
    "verify_card": ("POST", "/v1/accounts/{account_id}/cards/{card_id}/verify"),
    "unbind_card": ("DELETE", "/v1/accounts/{account_id}/cards/{card_id}"),
    "recharge": ("POST", "/v1/recharges"),
    "create_payment": ("POST", "/v1/payments"),
    "confirm_payment": ("POST", "/v1/payments/{order_id}/confirm"),
    "cancel_payment": ("POST", "/v1/payments/{order_id}/cancel"),
    "batch_payments": ("POST", "/v1/batch-payments"),
    "refund": ("POST", "/v1/refunds"),
    "freeze": ("POST", "/v1/freezes"),
    "release_freeze": ("POST", "/v1/freezes/{order_id}/release"),
    "withdraw": ("POST", "/v1/withdrawals"),
    "bulk": ("POST", "/v1/bulk"),
    "show_order": ("GET", "/v1/orders/{order_id}"),
    "list_orders": ("GET", "/v1/orders"),
    # The bank simulator's page of a card's statement (operator token, not a platform signature).
    "card_transactions": ("GET", "/sim/cards/{card_no}/transactions"),
}
