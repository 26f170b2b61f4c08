//! The contract's words on top of what utoipa derives from the handlers (`openapi::ApiDoc`):
//! each operation's name, summary, description and the error codes it answers; the rules of
//! API.md on every request field and parameter, by name (one rule per name, so the same field
//! means the same thing everywhere); examples; the tags, servers and security schemes. The
//! served document is `document(currencies)`; `tests/contract.rs` holds it to openapi-spec-
//! validator, Redocly, Spectral and Schemathesis.

use serde_json::{json, Map, Value};

/// What the document says of one operation.
pub struct Operation {
    /// The handler's name (what utoipa derives the operationId from).
    pub handler: &'static str,
    /// The operationId: unique, named for what the operation does.
    pub id: &'static str,
    pub summary: &'static str,
    pub description: &'static str,
    /// Who may call it: `platform` (signed), `operator` (bearer token), `channel` (the bank's
    /// callback signature) or `public`.
    pub caller: Caller,
    /// Codes beyond those every operation of its caller answers (see `codes_of`).
    pub codes: &'static [&'static str],
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Caller {
    Platform,
    Operator,
    Channel,
    Public,
}

use Caller::{Channel, Operator, Platform, Public};

macro_rules! op {
    ($handler:literal, $id:literal, $caller:expr, $summary:literal, $description:literal, [$($code:literal),* $(,)?]) => {
        Operation { handler: $handler, id: $id, caller: $caller, summary: $summary, description: $description, codes: &[$($code),*] }
    };
}

/// Every operation of the document (a test checks that the two lists agree).
pub const OPERATIONS: &[Operation] = &[
    op!("open_account", "open_account", Platform, "Open an account", "Opens a member's account in one currency (one per member and currency) with its virtual account number; balances start at zero.", ["idempotency_conflict", "account_exists", "agreement_required"]),
    op!("show_account", "show_account", Platform, "Show an account and its balances", "The account with its balances as decimal strings: available, withdrawable, frozen and unsettled.", []),
    op!("close_account", "close_account", Platform, "Close an account", "Closes an account whose balances are all zero; a closed account takes no debits or credits. An account the platform's settlement rule names as a commission receiver is not closed (the operator changes the rule first).", ["idempotency_conflict", "account_not_empty", "account_closed", "account_is_commission_receiver"]),
    op!("list_shards", "list_shards", Operator, "List the engine's shards", "Every shard with its accounts, mailbox depth, last sequence and pending outbox.", []),
    op!("one_shard", "show_shard", Operator, "Show one shard", "One shard in detail (its state, queues and whether it stopped and why).", []),
    op!("take_backup", "take_backup", Operator, "Take a backup while serving", "A consistent copy of the whole database (every shard and the gateway's records at one point) into a new directory under `[backups] root`, with a manifest of every file's BLAKE3; the server keeps serving. One at a time.", ["backup_running"]),
    op!("list_backups", "list_backups", Operator, "List backups", "The backups under `[backups] root`, each with its manifest's summary or why it cannot be read, and whether one is being taken.", []),
    op!("check_invariants", "check_invariants", Operator, "Check the ledger's invariants", "Checks every invariant of DESIGN.md over all shards: per currency the sum of all balances and what is in transit; `ok` is false when any fails.", []),
    op!("create_platform", "create_platform", Operator, "Create a platform", "Creates a platform with its settlement terms; the answer carries its secret, shown only here (and again by a replay of its out_order_no within a day, while the first secret is the platform's).", ["idempotency_conflict"]),
    op!("rotate_secret", "rotate_platform_secret", Operator, "Rotate a platform's secret", "Issues the platform's next secret (shown only in this answer); the previous one keeps verifying for the overlap, then only the new one does. With `from_version`, a repeated request shows the secret it made again instead of rotating twice; a platform at another version is `idempotency_conflict`.", ["idempotency_conflict"]),
    op!("set_account_status", "set_account_status", Operator, "Block or unblock an account", "The operator sets an account's status: normal, debit_blocked (nothing leaves it) or credit_blocked (nothing enters it); closing is the platform's own operation. A commission receiver of its platform's settlement rule is not credit-blocked.", ["account_closed", "account_is_commission_receiver"]),
    op!("change_channel", "change_channel", Operator, "Change a bank channel", "Changes a channel at run time (fees, limits, daily cap, window, calendar, enabled, the simulator's behaviour); stored, and used by routing from the next order on.", ["invalid_amount"]),
    op!("add_channel", "add_channel", Operator, "Add a bank channel", "Adds a channel at run time in the shape of a `[[channels]]` entry of the configuration; stored, so it outlives restarts.", ["invalid_amount"]),
    op!("list_channels", "list_channels", Operator, "List the bank channels", "Every channel's configuration, today's use of its daily cap and its health (recent outcomes, circuit state).", []),
    op!("publish", "publish_agreement_template", Platform, "Publish an agreement template version", "Publishes the next version of an agreement template (its code, title and text); earlier versions stay as they were signed.", ["idempotency_conflict", "agreement_limit_reached"]),
    op!("list_agreement_templates", "list_agreement_templates", Platform, "List agreement templates", "The platform's agreement templates with their versions, optionally of one code.", []),
    op!("show_template", "show_agreement_template", Platform, "Show an agreement template version", "One version of a template with its full text and the SHA-256 of that text.", []),
    op!("sign", "sign_agreement", Platform, "Record a member's signature", "Records that a member signed a template version through a channel, with the SHA-256 of the text signed.", ["idempotency_conflict", "agreement_changed", "agreement_limit_reached"]),
    op!("list_member_agreements", "list_member_agreements", Platform, "List a member's signatures", "The agreements a member signed, each with its version and the hash of its text.", []),
    op!("show_signature", "show_member_agreement", Platform, "Show one signature", "One of a member's signatures with the text's hash, the channel and when.", []),
    op!("put_requirements", "set_agreement_requirements", Platform, "Set the agreements required", "The template codes a member must have signed before opening an account and before binding a card.", []),
    op!("get_requirements", "show_agreement_requirements", Platform, "Show the agreements required", "The template codes required for opening an account and for binding a card.", []),
    op!("bulk", "submit_bulk", Platform, "Submit many operations at once", "Up to 8,189 money operations in one request, each with its own result (status and body) in order: the high-throughput path. An operation whose shard has stopped answers 503 `unavailable` in its place while the others answer as they went: its outcome is unknown until the shard starts again, so retry it with the same out_order_no.", ["too_many_operations", "invalid_amount", "idempotency_conflict"]),
    op!("bind", "bind_card", Platform, "Bind a bank card", "Four-element check (Luhn on the card; holder name and id number match the member), then a micro-deposit below 1.00 to the card (1 to 99 of the smallest unit in a currency of fewer than two decimals): the card is pending_verification. Three wrong amounts for one card number on the platform within 30 days, whichever binds, lock it (card_locked); a number is bound at most three times a day.", ["idempotency_conflict", "invalid_card_no", "identity_mismatch", "card_bind_limit_reached", "card_locked", "agreement_required"]),
    op!("verify", "verify_card", Platform, "Verify a card's micro-deposit", "The member reads the micro-deposit's amount off their card; the right amount verifies the card, three wrong ones lock it.", ["invalid_amount", "verification_failed", "card_locked"]),
    op!("unbind", "unbind_card", Platform, "Unbind a card", "Unbinds a card (a change of card is an unbind then a bind).", []),
    op!("list_cards", "list_cards", Platform, "List an account's cards", "The account's cards, masked, with their status.", []),
    op!("put_rule", "set_settlement_rule", Operator, "Set a platform's settlement rule", "Sets the platform's commission and service fee rule; settlement runs from now on apply it.", ["invalid_amount"]),
    op!("get_rule", "show_settlement_rule", Operator, "Show a platform's settlement rule", "The platform's rule (404 when it has none).", []),
    op!("delete_rule", "delete_settlement_rule", Operator, "Remove a platform's settlement rule", "Removes the rule: income of later runs only matures.", []),
    op!("list_entries", "list_entries", Platform, "List an account's journal", "The account's journal lines, newest first, paged with limit and cursor.", []),
    op!("list_events", "list_events", Platform, "List the platform's events", "The platform's events (one for each change of one of its orders), newest first: next_cursor pages to older ones. The webhook delivers the same events, oldest first.", []),
    op!("set_webhook", "set_webhook", Platform, "Set or remove the webhook", "Sets the URL events are delivered to, or removes it with null.", []),
    op!("show_webhook", "show_webhook", Platform, "Show the webhook", "The platform's webhook URL (null when none) and the secret its deliveries are signed with (`signing_secret`: apart from the API secret, so a webhook receiver holds no key that moves money; null while the API secret still signs them, for a platform made before webhook secrets that has not rotated one).", []),
    op!("rotate_webhook_secret", "rotate_webhook_secret", Platform, "Rotate the webhook signing secret", "Issues the next webhook signing secret: deliveries carry its signature in `X-Clearing-Signature` and, for the overlap, the replaced secret's in `X-Clearing-Signature-Previous`. A platform whose deliveries its API secret signed moves off it this way. With `from_version`, a repeat whose answer was lost does not rotate twice (another version is 409).", ["idempotency_conflict"]),
    op!("create_session", "create_h5_session", Platform, "Open an H5 link for a member", "A one-time link to a page where the member sets a payment password, signs an agreement, pays at the cashier or sees their wallet.", ["idempotency_conflict", "invalid_amount"]),
    op!("healthz", "check_health", Public, "Liveness", "Answers while the process serves HTTP.", []),
    op!("readyz", "check_readiness", Public, "Readiness", "Ready while every shard runs; 503 naming each stopped shard and why once one has stopped.", []),
    op!("scrape", "scrape_metrics", Operator, "Prometheus metrics", "The server's metrics in the Prometheus text format.", []),
    op!("list_notifications", "list_notifications", Platform, "List a member's notifications", "What was sent to the member (alerts of withdrawals over 50,000.00), newest first, paged with limit and cursor ({notifications, next_cursor}).", []),
    op!("offline_transfers", "import_offline_transfers", Operator, "Import offline transfers", "The bank statement's credit lines into virtual accounts, one result each: credited, or parked in suspense with a case.", ["invalid_amount", "idempotency_conflict"]),
    op!("list_cases", "list_cases", Operator, "List cases", "Money in suspense and reconciliation differences waiting for, or resolved by, an operator, by case id: filtered by status, paged with limit and cursor ({cases, next_cursor}).", []),
    op!("resolve_case", "resolve_case", Operator, "Resolve a suspense case", "Records how a case was resolved, by whom and when.", ["order_state_invalid"]),
    op!("show_order", "show_order", Platform, "Show an order", "The order with its current status and its kind's details.", []),
    op!("list_orders", "list_orders", Platform, "List orders", "The platform's transaction ledger, newest first: filtered by out_order_no, kind, status, account and creation time, paged with limit and cursor. Every filter is checked: a bad one is 400 naming it.", []),
    op!("set_password", "set_payment_password", Platform, "Set the payment password", "Sets the account's 6-digit payment password, which paying orders then carry when the platform requires it.", ["payment_locked"]),
    op!("create_batch", "create_batch_payment", Platform, "Pay many orders at once", "A batch of payments from one payer: all orders or none, one password check.", ["invalid_amount", "idempotency_conflict", "currency_mismatch", "account_closed", "account_frozen", "insufficient_funds", "exceeds_per_order_limit", "exceeds_daily_limit", "account_credit_blocked", "balance_limit_exceeded", "invalid_payment_password", "payment_locked", "payment_password_not_set"]),
    op!("create_payment", "create_payment", Platform, "Pay", "A payment from the payer's balance (or through a channel) to payees and splits: balance mode succeeds at once, guarantee mode holds the funds in escrow.", ["invalid_amount", "idempotency_conflict", "currency_mismatch", "account_closed", "account_frozen", "insufficient_funds", "exceeds_per_order_limit", "exceeds_daily_limit", "account_credit_blocked", "balance_limit_exceeded", "invalid_payment_password", "payment_locked", "payment_password_not_set", "no_channel_available"]),
    op!("confirm", "confirm_payment", Platform, "Release escrow to payees", "Releases a guarantee payment's escrow to its payees, all or part; the payment succeeds when nothing is held any more.", ["invalid_amount", "idempotency_conflict", "order_state_invalid", "exceeds_held_amount", "account_closed", "account_credit_blocked", "balance_limit_exceeded"]),
    op!("cancel", "cancel_payment", Platform, "Return escrow to the payer", "Returns a guarantee payment's unreleased escrow to the payer: all, an amount (off the receivers in their order), or named receivers' parts (`cancels`).", ["invalid_amount", "idempotency_conflict", "order_state_invalid", "exceeds_held_amount", "account_closed", "balance_limit_exceeded"]),
    op!("create_refund", "create_refund", Platform, "Refund a payment", "Back to the payer from a payee; refunds never exceed what was released to payees.", ["invalid_amount", "idempotency_conflict", "order_state_invalid", "exceeds_refundable_amount", "insufficient_funds", "account_closed", "account_frozen", "balance_limit_exceeded"]),
    op!("create_freeze", "create_freeze", Platform, "Freeze funds", "Holds part of an account's available balance, with a reason and an optional expiry.", ["invalid_amount", "idempotency_conflict", "currency_mismatch", "account_closed", "account_frozen", "insufficient_funds"]),
    op!("release", "release_freeze", Platform, "Release frozen funds", "Releases a freeze, all or part.", ["invalid_amount", "idempotency_conflict", "order_state_invalid", "exceeds_frozen_amount"]),
    op!("create_recharge", "create_recharge", Platform, "Recharge an account", "Money in through a channel (the named one, else the first in the order's currency): pending until the channel confirms; funds land in settled. A new order the channel cannot take (another currency, outside its per-order limits, service window or business days) is refused with 422 no_channel_available.", ["invalid_amount", "idempotency_conflict", "currency_mismatch", "account_closed", "account_frozen", "account_credit_blocked", "balance_limit_exceeded", "exceeds_per_order_limit", "no_channel_available"]),
    op!("create_collection", "create_collection", Platform, "Collect from a member's card", "A recharge from the member's verified card through a money-in channel; refused with 422 no_channel_available when the channel cannot take it (currency, per-order limits, service window, business days).", ["invalid_amount", "idempotency_conflict", "currency_mismatch", "account_closed", "account_frozen", "account_credit_blocked", "balance_limit_exceeded", "card_not_verified", "no_channel_available"]),
    op!("reconcile_endpoint", "reconcile_channel", Operator, "Reconcile a channel's statement", "Matches a channel's statement file of a business date against the books and reports every difference.", ["invalid_amount"]),
    op!("reserve_check", "check_reserve", Operator, "Check the reserve", "Our reserve by the books must equal customer funds plus in transit, escrow, payouts sent, fees and suspense; with the bank's figure it also shows the difference.", ["invalid_amount"]),
    op!("settle", "run_settlement", Operator, "Run the settlement of a date", "Runs (or re-runs, changing nothing twice) the settlement of a business date: income matures, splits and fees post, guarantees auto-confirm, expired freezes release.", ["settlement_running", "business_date_in_future"]),
    op!("schedule", "show_settlement_schedule", Operator, "Show the settlement schedule", "The daily settlement's cut-off, the next business date it runs, the last that succeeded and failed runs.", []),
    op!("operator_statement", "show_operator_statement", Operator, "Download a settlement statement", "The statement of a business date as CSV, for every platform or one.", []),
    op!("platform_statement", "show_platform_statement", Platform, "Download the platform's statement", "The platform's settlement statement of a business date as CSV, or one account's.", []),
    op!("receive_callback", "receive_simulator_callback", Channel, "The bank simulator's verdict", "The bank's verdict on an order, signed with the channel key (X-Channel-Signature).", ["order_state_invalid"]),
    op!("card_transactions", "list_card_transactions", Operator, "A card's transactions at the bank", "What the card's holder sees at their bank (how a member reads a micro-deposit), for the operator or through a link the operator issued.", ["invalid_card_no"]),
    op!("card_link", "create_card_link", Operator, "Issue a card statement link", "A short-lived link to a card's statement at the simulated bank, to hand to the card's holder.", ["invalid_card_no"]),
    op!("statement_file", "show_channel_statement", Operator, "A channel's statement file", "The simulated bank's statement file of a channel and date, as reconciliation reads it.", []),
    op!("whoami", "show_platform", Platform, "Show the calling platform", "The platform the signature belongs to, with its settlement terms.", []),
    op!("create_member", "create_member", Platform, "Create a member", "An individual (resident ID, GB 11643 check digit) or enterprise (unified social credit code, GB 32100 check digit) with a mainland mobile number.", ["idempotency_conflict", "invalid_id_number"]),
    op!("create_withdrawal", "create_withdrawal", Platform, "Withdraw to a card", "Money out to the account's verified card: processing with the channel and fee routing chose, then succeeded or failed (funds back). The account is debited amount plus fee from withdrawable.", ["invalid_amount", "idempotency_conflict", "currency_mismatch", "account_closed", "account_frozen", "insufficient_funds", "exceeds_per_order_limit", "exceeds_daily_limit", "card_not_verified", "no_channel_available", "invalid_payment_password", "payment_locked", "payment_password_not_set"]),
    op!("create_payout", "create_payout", Platform, "Pay out to any card", "Money out to a card named in the request (not bound to the account): like a withdrawal, routed and charged the same way.", ["invalid_amount", "idempotency_conflict", "currency_mismatch", "account_closed", "account_frozen", "insufficient_funds", "exceeds_per_order_limit", "exceeds_daily_limit", "invalid_card_no", "no_channel_available", "invalid_payment_password", "payment_locked", "payment_password_not_set"]),
];

/// The HTTP statuses a code is answered with (most have one).
pub fn statuses_of(code: &str) -> &'static [u16] {
    match code {
        "invalid_request" | "invalid_amount" | "too_many_operations" | "invalid_id_number" | "invalid_card_no" => &[400],
        "invalid_payment_password" => &[400, 422],
        "unauthenticated" | "timestamp_out_of_window" | "replayed_request" => &[401],
        "platform_suspended" => &[403],
        "not_found" => &[404],
        "method_not_allowed" => &[405],
        "request_timeout" => &[408],
        "idempotency_conflict" | "settlement_running" | "agreement_changed" | "order_state_invalid" | "account_exists" | "backup_running" => &[409],
        "payload_too_large" => &[413],
        "card_bind_limit_reached" | "rate_limited" => &[429],
        "internal_error" => &[500],
        "unavailable" | "overloaded" => &[503],
        _ => &[422],
    }
}

/// Every code `operation` may answer: its own, those of its caller's authentication and limits,
/// and those every operation answers.
pub fn codes_of(operation: &Operation) -> Vec<&'static str> {
    let mut codes: Vec<&'static str> = vec!["invalid_request", "not_found", "method_not_allowed", "internal_error", "unavailable"];
    match operation.caller {
        Platform => codes.extend([
            "unauthenticated",
            "timestamp_out_of_window",
            "replayed_request",
            "platform_suspended",
            "rate_limited",
            "request_timeout",
            "payload_too_large",
            "overloaded",
        ]),
        Operator => codes.extend(["unauthenticated", "payload_too_large", "overloaded"]),
        Channel => codes.extend(["unauthenticated", "timestamp_out_of_window", "payload_too_large", "overloaded"]),
        Public => {}
    }
    codes.extend(operation.codes);
    let mut seen = std::collections::HashSet::new();
    codes.retain(|code| seen.insert(*code));
    codes
}

/// Tags, one per resource, with what they hold.
const TAGS: &[(&str, &str)] = &[
    ("accounts", "Members' accounts, their balances, journals, payment passwords and statements."),
    ("agreements", "Agreement templates and members' signatures."),
    ("cards", "Bank cards bound to accounts: the four-element check and the micro-deposit."),
    ("events", "The platform's events and the webhook that delivers them."),
    ("h5", "One-time links to the H5 pages a member opens."),
    ("health", "Liveness and readiness."),
    ("members", "Members (individuals and enterprises) and what was sent to them."),
    ("money", "Money movement: recharges, payments, escrow, refunds, freezes, withdrawals and bulk."),
    ("operator", "The system operator's API (bearer token): platforms, shards, channels, settlement, reconciliation."),
    ("orders", "Orders: one, or the platform's transaction ledger."),
    ("platform", "The calling platform itself."),
    ("simulator", "The bank simulator: its callbacks, card statements and statement files."),
];

/// The HMAC recipe, as the security scheme's description (API.md "Authentication").
const SIGNING: &str = "Every /v1 request is signed by the platform with its secret. Headers: `X-Platform-Id` (the platform id), \
`X-Timestamp` (unix seconds, within 300 s of the server's clock), `X-Nonce` (16 to 64 characters [A-Za-z0-9], never reused within \
the window) and `X-Signature` = hex(HMAC-SHA256(secret, canonical)) where canonical = METHOD \"\\n\" PATH_AND_QUERY \"\\n\" \
TIMESTAMP \"\\n\" NONCE \"\\n\" hex(SHA256(body)); the body is the exact bytes sent (an empty body hashes the empty string). \
Each header appears once (a repeated one is refused), and `X-Timestamp` is decimal digits. \
Failures are 401 `unauthenticated` (missing, repeated or bad header or signature, unknown platform), `timestamp_out_of_window` or `replayed_request`.";

/// A rule of API.md for a field or parameter of that name, as JSON Schema keywords.
fn rule(name: &str, amount_pattern: &str, currencies: &[String]) -> Option<Value> {
    let id = |prefix: &str, what: &str| json!({"type": "string", "pattern": format!("^{prefix}(0|[1-9][0-9]{{0,18}})$"), "description": what, "example": format!("{prefix}42")});
    Some(match name {
        "out_order_no" => {
            json!({"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$", "minLength": 1, "maxLength": 64, "description": "The platform's own order number (1 to 64 characters [A-Za-z0-9_-]), unique per platform and operation kind: the idempotency key.", "example": "pay-20261122-0001"})
        }
        "amount" => {
            json!({"type": "string", "pattern": amount_pattern, "description": "A positive decimal string in major units, with no more decimals than the currency allows.", "example": "100.50"})
        }
        "currency" => json!({"type": "string", "enum": currencies, "description": "A configured currency (ISO 4217 code).", "example": currencies.first()}),
        "account_id" | "payer_account_id" | "payee_account_id" => id("acc_", "An account id."),
        "member_id" => id("mem_", "A member id."),
        "order_id" | "payment_order_id" => id("ord_", "An order id."),
        "card_id" => id("card_", "A card id."),
        "platform_id" => id("plt_", "A platform id."),
        "password" | "payment_password" => {
            json!({"type": "string", "pattern": "^[0-9]{6}$", "description": "A payment password: exactly 6 digits.", "example": "246810"})
        }
        "phone" => json!({"type": "string", "pattern": "^1[3-9][0-9]{9}$", "description": "A mainland mobile number of 11 digits.", "example": "13800138000"}),
        "id_number" => {
            json!({"type": "string", "pattern": "^[0-9A-Za-z]{18}$", "description": "A resident ID (18 characters, GB 11643 check digit) for individuals, a unified social credit code (18 characters, GB 32100 check digit) for enterprises.", "example": "11010519491231002X"})
        }
        "card_no" => {
            json!({"type": "string", "pattern": "^[0-9]{12,19}$", "description": "A bank card number of 12 to 19 digits whose last digit is its Luhn check digit.", "example": "6222020200000000006"})
        }
        "business_date" | "date" => {
            json!({"type": "string", "format": "date", "pattern": DATE_PATTERN, "description": "A business date, YYYY-MM-DD, from 1970 on.", "example": "2026-11-22"})
        }
        "type" => {
            json!({"type": "string", "enum": ["individual", "enterprise"], "description": "individual (a resident ID) or enterprise (a unified social credit code).", "example": "individual"})
        }
        "expires_at" => {
            json!({"type": "string", "format": "date-time", "pattern": DATE_TIME_PATTERN, "description": "An RFC 3339 time, in the future.", "example": "2099-01-01T00:00:00Z"})
        }
        _ => return integer_rule(name),
    })
}

/// Text a person typed: `min` to `max` characters, not all blank, no control characters (the
/// server counts characters, trims blanks and refuses control characters the same way).
fn text(min: usize, max: usize, what: &str, example: &str) -> Value {
    json!({"type": "string", "minLength": min, "maxLength": max, "pattern": TEXT_PATTERN, "description": what, "example": example})
}

/// A list of `item` components, `min` to `max` long.
fn array(item: &str, min: usize, max: usize, what: &str) -> Value {
    json!({"type": "array", "minItems": min, "maxItems": max, "items": {"$ref": format!("#/components/schemas/{item}")}, "description": what})
}

/// Like `text`, with tabs and line breaks allowed.
fn paragraphs(min: usize, max: usize, what: &str, example: &str) -> Value {
    json!({"type": "string", "minLength": min, "maxLength": max, "pattern": PARAGRAPHS_PATTERN, "description": what, "example": example})
}

/// Some character that is not blank, and no control characters (C0, DEL, C1): one line.
pub const TEXT_PATTERN: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$";
/// The same, with tabs and line breaks allowed: paragraphs.
pub const PARAGRAPHS_PATTERN: &str = "^[^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f-\\u009f]*$";

/// A calendar date YYYY-MM-DD from 1970 on (29 February left out: JSON Schema cannot say which
/// years are leap years; the server takes it in those years).
const DATE_PATTERN: &str = "^(19[7-9][0-9]|2[0-9]{3})-((0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])|(0[13-9]|1[0-2])-(29|30)|(0[13578]|1[02])-31)$";

/// An RFC 3339 time from 1971 on (the server counts microseconds since 1970; a day of the month
/// past the 28th is left out, as JSON Schema cannot say which months have it).
const DATE_TIME_PATTERN: &str = "^(197[1-9]|19[89][0-9]|2[0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$";

/// A channel statement file as reconciliation reads it (bank/src/statement.rs): the header we
/// write, then lines of five or six fields, none blank, direction and status from their words
/// (the server also takes the columns in any order and GBK; a line's amount that does not match
/// the order is a difference in the report, not a refusal).
/// A field starts with a character that is not blank, for JSON Schema's `\s` (ECMA-262) and for
/// Rust's `str::trim`, which the statement reader applies: U+0085 (next line) is blank only for
/// the second, so a field of it alone was valid here and empty there (Schemathesis, session 46).
const RECONCILE_FILE_PATTERN: &str = "^bank_ref,order_id,direction,amount,status,fee(\\n[^,\"\\s\\u0085][^,\"\\n\\r]{0,99},[^,\"\\s\\u0085][^,\"\\n\\r]*,(in|out),[^,\"\\s\\u0085][^,\"\\n\\r]*,(succeeded|failed)(,[^,\"\\n\\r]*)?){0,20}\\n?$";
const RECONCILE_FILE_EXAMPLE: &str = "bank_ref,order_id,direction,amount,status,fee\nB0001,ord_42,in,100.50,succeeded,0.10\n";

/// A non-negative decimal in major units with at most `exponent` decimals (fees, caps, a bank
/// balance, a tier's threshold).
fn non_negative_pattern(exponent: u8) -> String {
    if exponent == 0 {
        return "^(0|[1-9][0-9]{0,14})$".to_string();
    }
    format!("^(0|[1-9][0-9]{{0,{}}})(\\.[0-9]{{1,{exponent}}})?$", 14usize.saturating_sub(usize::from(exponent)))
}

/// What the document knows of the configuration: currencies and channels.
pub struct Setting<'a> {
    pub amount: &'a str,
    pub non_negative: &'a str,
    pub currencies: &'a [String],
    /// Every channel's name (reconciliation), and the enabled money-in ones (recharges, direct
    /// payments, collections).
    pub channels: &'a [String],
    pub money_in: &'a [String],
}

/// The rule of a field that means one thing in one request body (`schema`) and another
/// elsewhere: checked before the rules by name.
fn schema_rule(schema: &str, field: &str, setting: &Setting) -> Option<Value> {
    let enumeration = |values: &[&str], what: &str| json!({"type": "string", "enum": values, "description": what, "example": values[0]});
    // With no such channel configured the field takes no value at all (an empty enum is not
    // valid JSON Schema): the name is described, not enumerated.
    let named = |names: &[String], what: &str| match names.first() {
        Some(first) => json!({"type": "string", "enum": names, "description": what, "example": first}),
        None => json!({"type": "string", "description": what}),
    };
    let rate = json!({"type": "string", "pattern": "^(0(\\.[0-9]{1,6})?|1(\\.0{1,6})?)$", "description": "A decimal fraction from 0 to 1 with up to 6 places.", "example": "0.006"});
    let code = json!({"type": "string", "pattern": "^[a-z0-9_]{1,32}$", "description": "An agreement template's code: 1 to 32 characters [a-z0-9_].", "example": "terms"});
    Some(match (schema, field) {
        ("StatusBody", "status") => enumeration(&["normal", "debit_blocked", "credit_blocked"], "The account's new status."),
        ("ResolveBody", "resolution") => paragraphs(1, 1024, "How the case was resolved.", "returned to the payer"),
        ("ResolveBody", "operator") => text(1, 128, "Who resolved it.", "alice"),
        ("ResolveBody", "hold") => enumeration(
            &["release", "capture"],
            "What becomes of the case's hold, if it has one: released to the account (the default) or captured into suspense.",
        ),
        ("NewPlatform", "name") => text(1, 128, "The platform's name.", "Home Decor Mall"),
        ("NewMember", "name") => text(1, 64, "The member's legal name.", "张三"),
        ("BindBody", "holder_name") => text(1, 64, "The card holder's name, as the member's.", "张三"),
        ("FreezeBody", "reason") => {
            json!({"type": "string", "minLength": 1, "maxLength": 256, "description": "Why the money is frozen: 1 to 256 bytes of UTF-8 (a character may take up to 4; the ledger's own rule, kept in bytes so old journals replay exactly).", "example": "dispute 42"})
        }
        ("PaymentBody" | "CashierPayment", "description") => {
            json!({"type": ["string", "null"], "maxLength": 256, "description": "What the payment is for (at most 256 characters).", "example": "order 42"})
        }
        ("PublishBody" | "SignBody" | "AgreementRef", "code") => code,
        ("PublishBody", "title") => text(1, 128, "The template's title.", "Service terms"),
        ("PublishBody", "text") => paragraphs(1, 65_536, "The exact text the signer is shown.", "I agree to the terms."),
        ("SignBody" | "AgreementRef", "version") => {
            json!({"type": "integer", "minimum": 1, "maximum": u32::MAX, "description": "The version signed.", "example": 1})
        }
        ("RequirementsBody", "open_account" | "bind_card") => {
            json!({"type": "array", "maxItems": 16, "uniqueItems": true, "items": code, "description": "Codes of published templates the member must have signed (an unpublished one is 404 naming the list).", "example": ["privacy"]})
        }
        ("RechargeBody" | "PaymentBody" | "CashierPayment" | "CollectionBody", "channel") => {
            let mut rule = named(setting.money_in, "An enabled money-in channel (the first configured one when absent).");
            rule["type"] = json!(["string", "null"]);
            if let Some(values) = rule.get_mut("enum").and_then(Value::as_array_mut) {
                values.push(Value::Null);
            }
            rule
        }
        ("ReconcileBody", "channel") => named(setting.channels, "A configured channel."),
        ("ReconcileBody", "file") => {
            json!({"type": "string", "pattern": RECONCILE_FILE_PATTERN, "description": "The channel's statement file as the bank sent it: CSV with a header line naming its columns (bank_ref, order_id, amount, ...), then one line per movement; each bank_ref at most 100 characters and on one line only.", "example": RECONCILE_FILE_EXAMPLE})
        }
        ("PayoutBody", "holder_name") => text(1, 64, "The card holder's name (1 to 64 characters).", "张三"),
        ("PayoutBody", "account_type") => {
            json!({"type": ["string", "null"], "enum": ["personal", "corporate", null], "description": "personal (default) or corporate: which channels may serve the receiving account.", "example": "personal"})
        }
        ("WithdrawalBody" | "PayoutBody", "arrival") => {
            json!({"type": ["string", "null"], "enum": ["realtime", "standard", null], "description": "realtime or standard (routing picks when absent).", "example": "standard"})
        }
        ("WebhookBody", "url") => json!({
            "type": ["string", "null"],
            "maxLength": 2048,
            "pattern": "^https://([a-z0-9][a-z0-9-]{0,30}\\.){1,3}(com|cn|net|org)(/[!-~]*)?$",
            "description": "An absolute https:// URL of a public host (no user or password; private, loopback and reserved addresses are refused, names checked again at each delivery); null removes it. The pattern is a safe subset: the server takes any such URL.",
            "example": "https://hooks.example.com/clearing"
        }),
        ("SessionBody", "expires_in_seconds") => {
            json!({"type": ["integer", "null"], "minimum": 1, "maximum": 300, "description": "How long the link works (1 to 300 seconds).", "example": 300})
        }
        ("SessionBody", "locale") => {
            json!({"type": ["string", "null"], "enum": ["zh-CN", "en", null], "description": "The pages' language.", "example": "zh-CN"})
        }
        ("SessionBody", "return_url") => json!({
            "type": ["string", "null"],
            "maxLength": 512,
            "pattern": "^https?://[A-Za-z0-9][A-Za-z0-9.-]{0,62}(:[1-9][0-9]{0,3})?(/[A-Za-z0-9._~-]{0,40}){0,4}$",
            "description": "Where the pages send the member back (http or https, at most 512 bytes). The pattern is a safe subset: the server takes any such URL.",
            "example": "https://shop.example.com/back"
        }),
        ("TierBody", "from") => {
            json!({"type": "string", "pattern": setting.non_negative, "description": "Where the tier starts: an amount (basis amount) or a whole count (basis count).", "example": "0"})
        }
        ("TierBody", "rate") | ("RuleBody", "service_fee_rate") => rate,
        ("Callback", "kind") => enumeration(&["recharge", "withdrawal"], "Which kind of order the verdict is about."),
        ("Callback", "status") => enumeration(&["succeeded", "failed"], "The bank's verdict."),
        ("ChannelSpec" | "ChannelChange", "fee_fixed" | "fee_min" | "fee_max" | "order_min" | "order_max" | "daily_cap") => {
            json!({"type": "string", "pattern": setting.non_negative, "description": "A non-negative amount in the channel's currency.", "example": "0"})
        }
        ("ChannelSpec" | "ChannelChange", "window") => json!({
            "type": "string",
            "pattern": "^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)-(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$",
            "description": "HH:MM-HH:MM business-local time, start at or before end (00:00-24:00: 7x24).",
            "example": "00:00-24:00"
        }),
        ("ChannelSpec", "id") => {
            json!({"type": "integer", "minimum": 1, "maximum": u16::MAX, "description": "The channel's number: unused, 1 to 65535 (0 is offline transfers).", "example": 7})
        }
        ("ChannelSpec", "name") => {
            json!({"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$", "description": "The channel's name: 1 to 64 of [A-Za-z0-9_-].", "example": "bank_a_fast"})
        }
        ("ChannelSpec", "direction") => enumeration(&["in", "out"], "in (recharges, direct payments, collections) or out (withdrawals, payouts)."),
        ("ChannelSpec", "arrival") => enumeration(&["realtime", "standard"], "When the money arrives."),
        ("ChannelSpec", "serves") => {
            json!({"type": "array", "items": {"type": "string", "enum": ["personal", "corporate"]}, "description": "Whom it pays out to.", "example": ["personal"]})
        }
        ("ChannelSpec", "kind") => {
            json!({"type": "string", "maxLength": clearing_actor::channels::CHANNEL_KIND_MAX, "description": "A free label of the channel's kind (e.g. bank_direct).", "example": "bank_direct"})
        }
        ("PaymentBody" | "CashierPayment" | "BatchOrderBody", "payees") => {
            array("LegBody", 1, 32, "Who receives the money (1 to 32; payees and splits together at most 32, each account once, summing to the amount).")
        }
        ("PaymentBody" | "CashierPayment" | "BatchOrderBody", "splits") => {
            array("LegBody", 0, 31, "Receivers of a share on settlement (payees and splits together at most 32).")
        }
        ("CancelBody", "cancels") => {
            let mut rule = array("LegBody", 1, 32, "The receivers whose held parts go back to the payer, each that much of its part (1 to 32); absent: `amount` off the receivers in their order, or all.");
            rule["type"] = json!(["array", "null"]);
            rule
        }
        ("ConfirmBody", "releases") => {
            let mut rule = array("LegBody", 1, 32, "Partial releases: what each receiver gets now (1 to 32); absent releases all.");
            rule["type"] = json!(["array", "null"]);
            rule
        }
        ("BatchBody", "orders") => array("BatchOrderBody", 1, 1000, "1 to 1,000 orders from one payer, each with its own number and payees."),
        ("RuleBody", "tiers") => array("TierBody", 1, 16, "1 to 16 tiers, each from a threshold on."),
        ("RuleBody", "receivers") => array(
            "ReceiverBody",
            0,
            8,
            "Up to 8 open accounts of the platform in the rule's currency, sharing the commission (at least one when a tier's rate is above 0).",
        ),
        ("TransfersBody", "lines") => {
            json!({"type": "array", "minItems": 1, "maxItems": 8189, "items": {"$ref": "#/components/schemas/StatementLine"}, "description": "1 to 8,189 statement lines, each checked on its own."})
        }
        ("BulkRequest", "operations") => {
            json!({"type": "array", "minItems": 1, "maxItems": 8189, "items": {"$ref": "#/components/schemas/BulkOperation"}, "description": "1 to 8,189 operations, each checked on its own."})
        }
        ("BackupRequest", "to") => {
            json!({"type": "string", "pattern": "^/", "description": "An absolute path of a new or empty directory under `[backups] root`, without . or .. parts.", "example": "/var/backups/clearing/2026-11-22"})
        }
        _ => return None,
    })
}

/// The request bodies (each refuses unknown fields).
const REQUEST_SCHEMAS: &[&str] = &[
    "StatusBody",
    "BackupRequest",
    "ResolveBody",
    "ChannelSpec",
    "ChannelChange",
    "TransfersBody",
    "NewPlatform",
    "RotateSecret",
    "RotateWebhookSecret",
    "RuleBody",
    "ReconcileBody",
    "SettlementBody",
    "CardLinkBody",
    "Callback",
    "NewAccount",
    "BindBody",
    "VerifyBody",
    "CloseBody",
    "PasswordBody",
    "RequirementsBody",
    "PublishBody",
    "BatchBody",
    "BulkRequest",
    "CollectionBody",
    "FreezeBody",
    "PartialBody",
    "CancelBody",
    "SessionBody",
    "NewMember",
    "SignBody",
    "PaymentBody",
    "ConfirmBody",
    "RechargeBody",
    "RefundBody",
    "WebhookBody",
    "WithdrawalBody",
    "TierBody",
    "ReceiverBody",
    "LegBody",
    "BatchOrderBody",
    "AgreementRef",
    "CashierPayment",
    "StatementLine",
    "BulkOperation",
    "PayoutBody",
];

/// Operations whose body may be left out (every field has a default).
const BODY_OPTIONAL: &[&str] = &["rotate_platform_secret", "rotate_webhook_secret", "create_card_link"];

/// Request schemas whose items the server checks one by one, answering each in its results (a
/// bad item is its own 4xx inside a 200, not a refusal of the request): their fields are
/// described, not constrained, so the document does not call a request invalid that the
/// server rightly takes.
const CHECKED_PER_ITEM: &[&str] = &["BulkOperation", "StatementLine"];

/// The rules of query parameters (a body field of the same name may mean something else: a
/// commission tier's `from` is an amount).
fn parameter_rule(path: &str, name: &str, amount_pattern: &str, currencies: &[String]) -> Option<Value> {
    Some(match name {
        "status" if path == "/admin/cases" => {
            json!({"type": "string", "enum": ["open", "resolved", "all"], "description": "Which cases: open, resolved or all (the default).", "example": "open"})
        }
        "cursor" if path == "/admin/cases" => {
            json!({"type": "string", "minLength": 1, "maxLength": 512, "description": "The next_cursor of the previous page (the last case id it listed).", "example": "case_B-2"})
        }
        "from" | "to" => {
            json!({"type": "string", "format": "date-time", "pattern": DATE_TIME_PATTERN, "description": "An RFC 3339 time (from 1971 on).", "example": "2026-11-22T10:00:00Z"})
        }
        "limit" => json!({"type": "integer", "minimum": 1, "maximum": 500, "default": 50, "description": "Page size, 1 to 500.", "example": 50}),
        "cursor" => {
            json!({"type": "string", "minLength": 1, "maxLength": 512, "description": "The next_cursor of the previous page, as the API returned it (opaque: a made-up one is 400 naming cursor).", "example": "1764582000000000-42"})
        }
        "kind" => {
            json!({"type": "string", "enum": ["recharge", "payment", "refund", "freeze", "withdrawal", "adjustment"], "description": "An order kind.", "example": "payment"})
        }
        "status" => {
            json!({"type": "string", "enum": ["pending", "processing", "held", "succeeded", "failed", "cancelled", "partially_refunded", "refunded"], "description": "An order status.", "example": "succeeded"})
        }
        "code" => {
            json!({"type": "string", "pattern": "^[a-z0-9_]{1,32}$", "description": "An agreement template's code: 1 to 32 characters [a-z0-9_].", "example": "terms"})
        }
        "bank_balance" => {
            json!({"type": "string", "pattern": non_negative_pattern(2), "description": "The bank's balance of the reserve account (a non-negative amount).", "example": "1000000.00"})
        }
        _ => return rule(name, amount_pattern, currencies),
    })
}

/// The bounds the server holds an integer field of that name to.
fn integer_rule(name: &str) -> Option<Value> {
    let (minimum, maximum): (u64, u64) = match name {
        "fee_rate_bps" => (0, 10_000),
        "sim_failure_per_mille" | "sim_drop_per_mille" => (0, 1_000),
        "timeout_ms" => (100, 86_400_000),
        "sim_latency_ms" => (0, 86_400_000),
        "eta_minutes" => (0, 43_200),
        "settlement_cycle_days" => (0, 30),
        "auto_confirm_days" => (1, 90),
        "seconds" => (1, 3_600),
        "overlap_seconds" => (0, 7 * 86_400),
        "shard" => (0, u64::from(u16::MAX)),
        "share" => (1, 1_000_000),
        _ => return None,
    };
    Some(json!({"type": "integer", "minimum": minimum, "maximum": maximum}))
}

/// An unsigned integer field without a rule of its own: the bounds of its Rust type, which
/// the server's parser holds it to (a larger number is 400 naming the field), instead of the
/// signed format utoipa gives it (`int64` for a u64 took numbers the server refused, and
/// refused none it took past `int64`).
fn unsigned_bounds(object: &mut Map<String, Value>) {
    let unsigned = object.get("minimum").and_then(Value::as_f64) == Some(0.0) && object.get("maximum").is_none();
    let maximum = match object.get("format").and_then(Value::as_str) {
        Some("int32") if unsigned => u64::from(u32::MAX),
        Some("int64") if unsigned => u64::MAX,
        _ => return,
    };
    object.remove("format");
    object.insert("maximum".into(), json!(maximum));
}

/// The amount pattern for currencies with at most `exponent` decimals: positive, no leading
/// zeros, within `AMOUNT_MINOR_MAX` minor units.
pub fn amount_pattern(exponent: u8) -> String {
    let exponent = usize::from(exponent);
    let whole_digits_max = 15usize.saturating_sub(exponent).max(1);
    let whole = format!("[1-9][0-9]{{0,{}}}", whole_digits_max - 1);
    if exponent == 0 {
        return format!("^{whole}$");
    }
    let fractions: Vec<String> = (0..exponent)
        .map(|zeros| {
            let rest = exponent - zeros - 1;
            let tail = if rest == 0 { String::new() } else { format!("[0-9]{{0,{rest}}}") };
            format!("{}[1-9]{tail}", "0".repeat(zeros))
        })
        .collect();
    format!("^({whole}(\\.[0-9]{{1,{exponent}}})?|0\\.({}))$", fractions.join("|"))
}

/// Applies the field rules to every property of `schema` (recursively through items and
/// nested objects) whose name has one; keeps the field's own description when it has one.
/// `schema` names the component it is (its own rules first), or is empty.
fn constrain_schema(value: &mut Value, schema: &str, setting: &Setting) {
    let Some(object) = value.as_object_mut() else { return };
    if let Some(Value::Object(properties)) = object.get_mut("properties") {
        for (name, property) in properties.iter_mut() {
            if let Some(mut wanted) = schema_rule(schema, name, setting) {
                if let Some(description) = property.get("description").cloned() {
                    wanted["description"] = description;
                }
                if is_nullable(property) {
                    make_nullable(&mut wanted);
                }
                *property = wanted;
                continue;
            }
            constrain_property(name, property, setting);
        }
    }
    if let Some(items) = object.get_mut("items") {
        constrain_schema(items, "", setting);
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        if let Some(Value::Array(options)) = object.get_mut(key) {
            options.iter_mut().for_each(|option| constrain_schema(option, "", setting));
        }
    }
}

fn constrain_property(name: &str, property: &mut Value, setting: &Setting) {
    let Some(mut wanted) = rule(name, setting.amount, setting.currencies) else {
        if let Some(object) = property.as_object_mut() {
            unsigned_bounds(object);
        }
        constrain_schema(property, "", setting);
        return;
    };
    // Only string (or integer) fields take a rule: a field of the same name with another shape
    // (an object, a list) keeps its own schema.
    let nullable = is_nullable(property);
    let Some(object) = property.as_object_mut() else { return };
    let shaped = match object.get("type") {
        Some(Value::String(t)) => t == "string" || t == "integer",
        Some(Value::Array(types)) => types.iter().any(|t| t == "string" || t == "integer"),
        _ => false,
    };
    if !shaped {
        return;
    }
    if let Some(description) = object.get("description").cloned() {
        wanted["description"] = description;
    }
    if nullable {
        make_nullable(&mut wanted);
    }
    *property = wanted;
}

/// Whether a field's schema takes null (`Option` in the handler's body).
fn is_nullable(property: &Value) -> bool {
    matches!(property.get("type"), Some(Value::Array(types)) if types.iter().any(|t| t == "null"))
}

/// A rule made to take null too (for an optional field).
fn make_nullable(wanted: &mut Value) {
    let base = wanted["type"].clone();
    if base.is_array() {
        if base.as_array().is_some_and(|types| !types.iter().any(|t| t == "null")) {
            wanted["type"].as_array_mut().into_iter().for_each(|types| types.push(json!("null")));
        }
    } else {
        wanted["type"] = json!([base, "null"]);
    }
    if let Some(Value::Array(values)) = wanted.get_mut("enum") {
        if !values.contains(&Value::Null) {
            values.push(Value::Null);
        }
    }
}

/// The served document: what utoipa derived, with this module's words added.
pub fn document(mut doc: Value, currencies: &[(String, u8)], channels: &[String], money_in: &[String]) -> Value {
    let codes: Vec<String> = currencies.iter().map(|(code, _)| code.clone()).collect();
    let exponent = currencies.iter().map(|(_, e)| *e).max().unwrap_or(2);
    let amount = amount_pattern(exponent);
    let non_negative = non_negative_pattern(exponent);
    let setting = Setting { amount: &amount, non_negative: &non_negative, currencies: &codes, channels, money_in };
    doc["info"]["version"] = json!(env!("CARGO_PKG_VERSION"));
    doc["info"]["description"] = json!("The platform API of a virtual-account clearing engine (API.md is the contract), and the system operator's API. Amounts are decimal strings in major units; every error is `{\"error\": {\"code\", \"message\", \"param\"?}}` with a stable code.");
    doc["info"]["contact"] = json!({"name": "Clearing engine maintainers", "url": "https://clearing.invalid/support"});
    doc["info"]["license"] = json!({"name": "Proprietary", "url": "https://clearing.invalid/license"});
    doc["servers"] = json!([{"url": "http://127.0.0.1:8080", "description": "The default listen address (config/default.toml)"}]);
    doc["tags"] = Value::Array(TAGS.iter().map(|(name, description)| json!({"name": name, "description": description})).collect());
    let schemes = &mut doc["components"]["securitySchemes"];
    schemes["platform_signature"] = json!({"type": "apiKey", "in": "header", "name": "X-Signature", "description": SIGNING});
    schemes["operator_token"] = json!({"type": "http", "scheme": "bearer", "description": "The system operator's token: `CLEARING_ADMIN_TOKEN`, or the one generated into `<data_dir>/admin-token` on first start."});
    schemes["channel_signature"] = json!({"type": "apiKey", "in": "header", "name": "X-Channel-Signature", "description": "The bank's callback signature: `t=<unix seconds>,v1=<hex HMAC-SHA256(channel key, \"t.body\")>`."});
    if let Some(Value::Object(schemas)) = doc["components"].get_mut("schemas") {
        for (name, schema) in schemas.iter_mut() {
            // The views the API answers keep their own shapes: only what a client sends is constrained.
            if ![
                "OrderView",
                "OrderPage",
                "AccountView",
                "MemberView",
                "CardView",
                "EntryView",
                "EntryPage",
                "BulkResult",
                "BulkResponse",
                "ErrorBody",
                "ErrorDetail",
            ]
            .contains(&name.as_str())
                && !CHECKED_PER_ITEM.contains(&name.as_str())
            {
                constrain_schema(schema, name, &setting);
            }
        }
        // Request bodies refuse fields they do not know (serde's deny_unknown_fields): say so.
        for (name, schema) in schemas.iter_mut() {
            if REQUEST_SCHEMAS.contains(&name.as_str()) {
                schema["additionalProperties"] = json!(false);
            }
        }
        // The bulk's items: an operation name and its body, each checked on its own.
        if let Some(operation) = schemas.get_mut("BulkOperation") {
            operation["properties"]["op"] = json!({"type": "string", "description": "payment, recharge, refund, freeze, confirm, cancel or release_freeze (another name is that item's 400).", "example": "payment"});
            operation["properties"]["body"] =
                json!({"description": "The operation's request body, as its own endpoint takes it (checked per item).", "example": {}});
        }
        // A confirm, cancel or release names its order by the path; `order_id` in these bodies is
        // for the bulk's items only (a path operation refuses it), so the document leaves it out.
        for name in ["PartialBody", "ConfirmBody", "CancelBody"] {
            if let Some(Value::Object(properties)) = schemas.get_mut(name).and_then(|s| s.get_mut("properties")) {
                properties.remove("order_id");
            }
        }
    }
    doc["components"]["schemas"]["Event"] = event_schema();
    // Request bodies that carry the platform's order number: their operations replay.
    let numbered: std::collections::HashSet<String> = doc["components"]["schemas"]
        .as_object()
        .map(|schemas| {
            schemas
                .iter()
                .filter(|(_, schema)| schema.pointer("/properties/out_order_no").is_some())
                .map(|(name, _)| format!("#/components/schemas/{name}"))
                .collect()
        })
        .unwrap_or_default();
    if let Some(Value::Object(paths)) = doc.get_mut("paths") {
        for (path, item) in paths.iter_mut() {
            let Some(item) = item.as_object_mut() else { continue };
            for operation in item.values_mut() {
                let Some(operation) = operation.as_object_mut() else { continue };
                let handler = operation.get("operationId").and_then(Value::as_str).unwrap_or_default().to_string();
                let Some(entry) = OPERATIONS.iter().find(|o| o.handler == handler) else { continue };
                let body = operation.get("requestBody").and_then(|b| b.pointer("/content/application~1json/schema/$ref")).and_then(Value::as_str);
                let replays = body.is_some_and(|name| numbered.contains(name)) && !NOT_REPLAYED.contains(&entry.id);
                describe(path, operation, entry, &setting);
                if entry.id == "list_events" {
                    operation["responses"]["200"]["content"]["application/json"]["schema"] = json!({
                        "type": "object",
                        "required": ["events", "next_cursor"],
                        "properties": {
                            "events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}, "description": "Newest first."},
                            "next_cursor": {"type": ["string", "null"], "description": "Pass as `cursor` for older events; null at the end."},
                        },
                    });
                }
                if replays {
                    for (status, response) in operation.get_mut("responses").and_then(Value::as_object_mut).into_iter().flatten() {
                        if status.starts_with('2') {
                            response["headers"]["Idempotent-Replay"] = json!({"description": "`true` when this answer repeats the first answer to the same out_order_no (same status and body: nothing was done again); absent otherwise.", "schema": {"type": "string", "enum": ["true"]}});
                        } else if ["400", "404", "409", "422"].contains(&status.as_str()) {
                            // The statuses of the ledger's refusals (`error::rejection`).
                            response["headers"]["Idempotent-Replay"] = json!({"description": "`true` when this refusal repeats the ledger's first refusal of the same out_order_no: a refusal of the ledger's own checks (`insufficient_funds`, `account_frozen`, limits, states, ...) is kept with the number, so the same body is answered it again (nothing was tried again) and another body is 409 `idempotency_conflict`. Absent on refusals made before the ledger (the request's shape, authentication, payment password, channels), which keep nothing: a corrected request may use the number.", "schema": {"type": "string", "enum": ["true"]}});
                        }
                    }
                }
            }
        }
    }
    doc["webhooks"] = webhooks();
    doc
}

/// Operations whose body names an `out_order_no` that is not an idempotency key (an H5 link
/// echoes it for the platform's own records; each request makes a new link).
const NOT_REPLAYED: &[&str] = &["create_h5_session"];

/// Statuses whose answers carry `Retry-After` for some of their codes, and which: a limit's
/// (`rate_limited`, `overloaded`, `card_bind_limit_reached`) anywhere, `card_locked` only when a
/// bind is refused for its card number (a card locked by wrong amounts stays locked: its
/// `verify_card` answer has none; helper 114#1).
fn retry_after(status: u16, codes: &[&str], operation: &str) -> Option<Value> {
    let timed: Vec<&str> = codes
        .iter()
        .copied()
        .filter(|code| matches!(*code, "rate_limited" | "overloaded" | "card_bind_limit_reached") || (*code == "card_locked" && operation == "bind_card"))
        .collect();
    if timed.is_empty() || !matches!(status, 422 | 429 | 503) {
        return None;
    }
    let list = timed.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ");
    Some(json!({"description": format!("Seconds to wait before trying again; sent with {list}."), "schema": {"type": "integer", "minimum": 1}}))
}

/// One event as `GET /v1/events` lists it and the webhook posts it (`events::event_view`).
fn event_schema() -> Value {
    let string = |description: &str| json!({"type": "string", "description": description});
    json!({
        "type": "object",
        "description": "A creation or change of one of the platform's orders.",
        "required": ["event_id", "type", "created_at", "data"],
        "properties": {
            "event_id": {"type": "string", "pattern": "^evt_(0|[1-9][0-9]*)$", "description": "Unique per event: de-duplicate deliveries by it.", "example": "evt_42"},
            "type": {"type": "string", "pattern": "^order\\.[a-z_]+$", "description": "`order.` and the order's status after the change.", "example": "order.succeeded"},
            "created_at": {"type": "string", "format": "date-time", "description": "When the change happened (RFC 3339, UTC)."},
            "data": {
                "type": "object",
                "required": ["order_id", "out_order_no", "kind", "status", "amount", "currency", "account_id"],
                "properties": {
                    "order_id": string("The order's id."),
                    "out_order_no": {"type": ["string", "null"], "description": "The platform's order number, if the order has one."},
                    "kind": string("The order's kind (recharge, payment, refund, freeze, withdrawal, ...)."),
                    "status": string("The order's status after the change."),
                    "amount": string("The order's amount, a decimal string in major units."),
                    "currency": string("The order's currency."),
                    "account_id": string("The account the order belongs to."),
                },
            },
        },
    })
}

/// The webhook a platform may set (`POST /v1/webhook`): each event posted to its URL, signed.
fn webhooks() -> Value {
    let signature =
        "`t=<unix seconds>,v1=<hex HMAC-SHA256(webhook signing secret, \"<t>.<body>\")>` (the `signing_secret` of `GET /v1/webhook`; the API secret for a platform that has not rotated to one): verify it over the exact body bytes, and refuse a `t` far from your clock.";
    json!({
        "order_event": {
            "post": {
                "operationId": "receive_order_event",
                "summary": "An order event, delivered to the platform's webhook",
                "description": "Each creation and change of one of the platform's orders, posted to the URL set with `POST /v1/webhook`: at least once, in order per shard, retried with exponential backoff until a 2xx answer (given up after `[webhooks] attempts_max` attempts, 12 by default; `GET /v1/events` lists the same events). A receiver de-duplicates by `event_id`.",
                "tags": ["events"],
                "security": [],
                "parameters": [
                    {"name": "X-Clearing-Signature", "in": "header", "required": true, "description": format!("The current secret's signature: {signature}"), "schema": {"type": "string", "pattern": "^t=[0-9]+,v1=[0-9a-f]{64}$"}, "example": "t=1764806400,v1=5f2b1c0e9d8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c"},
                    {"name": "X-Clearing-Signature-Previous", "in": "header", "required": false, "description": "While a rotated secret's overlap lasts, the previous secret's signature in the same form (for a receiver that has not deployed the new secret yet).", "schema": {"type": "string", "pattern": "^t=[0-9]+,v1=[0-9a-f]{64}$"}},
                ],
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Event"}}}},
                "responses": {
                    "200": {"description": "Delivered (any 2xx counts)."},
                    "400": {"description": "Refused by the receiver (a bad signature, say): the event is tried again later, then given up."},
                },
            }
        }
    })
}

/// Names, describes and constrains one operation, and lists its error codes by status.
fn describe(path: &str, operation: &mut Map<String, Value>, entry: &Operation, setting: &Setting) {
    operation.insert("operationId".into(), json!(entry.id));
    operation.insert("summary".into(), json!(entry.summary));
    operation.insert("description".into(), json!(entry.description));
    let security = match entry.caller {
        Platform => json!([{"platform_signature": []}]),
        Operator => json!([{"operator_token": []}]),
        Channel => json!([{"channel_signature": []}]),
        Public => json!([]),
    };
    operation.insert("security".into(), security);
    if let Some(Value::Array(parameters)) = operation.get_mut("parameters") {
        for parameter in parameters.iter_mut() {
            let name = parameter["name"].as_str().unwrap_or_default().to_string();
            if let Some(Value::Object(mut wanted)) = parameter_rule(path, &name, setting.amount, setting.currencies) {
                let description = wanted.remove("description");
                if parameter.get("description").is_none() {
                    if let Some(description) = description {
                        parameter["description"] = description;
                    }
                }
                if let Some(example) = wanted.remove("example") {
                    parameter["example"] = example;
                }
                parameter["schema"] = Value::Object(wanted);
            } else if let Some(Value::Object(schema)) = parameter.get_mut("schema") {
                unsigned_bounds(schema);
            }
        }
    }
    if BODY_OPTIONAL.contains(&entry.id) {
        if let Some(body) = operation.get_mut("requestBody") {
            body["required"] = json!(false);
        }
    }
    if let Some(schema) = operation.get_mut("requestBody").and_then(|b| b.pointer_mut("/content/application~1json/schema")) {
        constrain_schema(schema, "", setting);
    }
    let Some(Value::Object(responses)) = operation.get_mut("responses") else { return };
    if path.ends_with(".csv") {
        if let Some(ok) = responses.get_mut("200") {
            ok["content"] = json!({"text/csv": {"schema": {"type": "string"}, "example": "order_id,kind,amount\nord_42,payment,100.50\n"}});
        }
    }
    if path == "/metrics" {
        if let Some(ok) = responses.get_mut("200") {
            ok["content"] = json!({"text/plain": {"schema": {"type": "string"}, "example": "clearing_commands_total{shard=\"0\"} 42\n"}});
        }
    }
    responses.remove("4XX");
    responses.remove("5XX");
    let mut by_status: std::collections::BTreeMap<u16, Vec<&str>> = std::collections::BTreeMap::new();
    for code in codes_of(entry) {
        for status in statuses_of(code) {
            by_status.entry(*status).or_default().push(code);
        }
    }
    for (status, codes) in by_status {
        let list = codes.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ");
        // The shared error shape: one type for clients (an SDK's ErrorBody); the codes this
        // operation answers with this status are listed in the description.
        let schema = json!({"$ref": "#/components/schemas/ErrorBody"});
        let example = json!({"error": {"code": codes[0], "message": "what went wrong, for a person"}});
        let mut response = json!({"description": format!("Error: {list}"), "content": {"application/json": {"schema": schema, "example": example}}});
        if let Some(header) = retry_after(status, &codes, entry.id) {
            response["headers"]["Retry-After"] = header;
        }
        responses.insert(status.to_string(), response);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amount_patterns_say_positive_with_at_most_the_currencys_decimals() {
        assert_eq!(amount_pattern(2), r"^([1-9][0-9]{0,12}(\.[0-9]{1,2})?|0\.([1-9][0-9]{0,1}|0[1-9]))$");
        assert_eq!(amount_pattern(0), "^[1-9][0-9]{0,14}$");
        assert_eq!(amount_pattern(3), r"^([1-9][0-9]{0,11}(\.[0-9]{1,3})?|0\.([1-9][0-9]{0,2}|0[1-9][0-9]{0,1}|00[1-9]))$");
    }

    /// A reconciliation file the schema accepts is one the statement reader accepts, character
    /// by character at the start of each required field: the schema's `\s` read as JSON Schema
    /// reads it (ECMA-262: no U+0085), the reader trimming as it does. Schemathesis found a
    /// U+0085 amount valid there and empty here (session 46).
    #[test]
    fn a_reconcile_file_the_schema_accepts_the_statement_reader_reads() {
        // ECMA-262's `\s`: WhiteSpace (tab, VT, FF, space, NBSP, ZWNBSP, Zs) and LineTerminator.
        let ecma_space = r"\t\x0B\x0C \xA0\x{FEFF}\p{Zs}\n\r\x{2028}\x{2029}";
        let schema = regex::Regex::new(&RECONCILE_FILE_PATTERN.replace(r"\s", ecma_space)).expect("the pattern compiles");
        assert!(schema.is_match(RECONCILE_FILE_EXAMPLE));
        assert_eq!(bank::statement::parse(RECONCILE_FILE_EXAMPLE.as_bytes()).map(|lines| lines.len()), Ok(1));
        let characters = (0..=0x3100u32).chain([0xFEFF, 0x1_F600]).filter_map(char::from_u32);
        let (mut accepted, mut refused) = (0, 0);
        for c in characters {
            for field in 0..3 {
                let mut values = ["B0001".to_string(), "ord_42".to_string(), "100.50".to_string()];
                values[field] = c.to_string();
                let [bank_ref, order_id, amount] = values;
                let file = format!("bank_ref,order_id,direction,amount,status,fee\n{bank_ref},{order_id},in,{amount},succeeded,0.10\n");
                if schema.is_match(&file) {
                    accepted += 1;
                    let read = bank::statement::parse(file.as_bytes());
                    assert!(
                        matches!(&read, Ok(lines) if lines.len() == 1),
                        "U+{:04X} in field {field}: the schema accepts, the reader says {read:?}",
                        c as u32
                    );
                } else {
                    refused += 1;
                }
            }
        }
        // Both sides are exercised: most characters are accepted, blanks, commas, quotes refused.
        assert!(accepted > 30_000 && refused > 60, "accepted {accepted}, refused {refused}");
    }

    #[test]
    fn every_code_of_every_operation_is_one_the_api_answers() {
        let known = crate::schemas::error_codes();
        for operation in OPERATIONS {
            for code in codes_of(operation) {
                assert!(known.contains(&code), "{} lists {code}", operation.id);
            }
        }
        let mut ids: Vec<&str> = OPERATIONS.iter().map(|o| o.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), OPERATIONS.len(), "operationIds are unique");
    }
}
