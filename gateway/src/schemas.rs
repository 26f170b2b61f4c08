//! The OpenAPI document's shared schemas (the error shape, order, account, member, card, entry
//! and bulk views) and the list of error codes: a leaf the handlers name in their annotations,
//! so that the document (`openapi`), which names every handler, is imported by nobody.

use engine::result::ResultCode;
use utoipa::ToSchema;

/// Codes the gateway answers without the engine (authentication, validation, cards, ...).
pub const GATEWAY_ERROR_CODES: [&str; 33] = [
    "invalid_request",
    "invalid_amount",
    "unauthenticated",
    "timestamp_out_of_window",
    "replayed_request",
    "not_found",
    "method_not_allowed",
    "payload_too_large",
    "too_many_operations",
    "idempotency_conflict",
    "invalid_id_number",
    "invalid_card_no",
    "identity_mismatch",
    "verification_failed",
    "card_locked",
    "card_bind_limit_reached",
    "card_not_verified",
    "invalid_payment_password",
    "payment_locked",
    "payment_password_not_set",
    "no_channel_available",
    "settlement_running",
    "business_date_in_future",
    "identity_locked",
    "backup_running",
    "overloaded",
    "rate_limited",
    "request_timeout",
    "platform_suspended",
    "agreement_required",
    "agreement_changed",
    "agreement_limit_reached",
    "account_is_commission_receiver",
];

/// Codes only the server's own failures produce (5xx).
pub const SERVER_ERROR_CODES: [&str; 2] = ["unavailable", "internal_error"];

/// Every error code the API answers with, without repeats.
pub fn error_codes() -> Vec<&'static str> {
    let mut codes: Vec<&'static str> = GATEWAY_ERROR_CODES.to_vec();
    for code in ResultCode::ALL.iter().skip(1) {
        codes.push(crate::error::rejection(*code).code);
    }
    codes.extend(SERVER_ERROR_CODES);
    let mut seen = std::collections::HashSet::new();
    codes.retain(|c| seen.insert(*c));
    codes
}

/// An error: HTTP status plus this body.
#[derive(ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(ToSchema)]
pub struct ErrorDetail {
    /// A stable code (the codes answered today are listed in its description).
    #[schema(schema_with = error_code_schema)]
    pub code: String,
    pub message: String,
    /// The field at fault, when one is.
    pub param: Option<String>,
}

/// A string, not an enum (helper 110#4): a client generated from an enum refuses a code added
/// later, which docs/compatibility.md allows; the codes answered today are listed in words and
/// each operation's error statuses name theirs.
fn error_code_schema() -> utoipa::openapi::schema::Object {
    let listed = error_codes().iter().map(|code| format!("`{code}`")).collect::<Vec<_>>().join(", ");
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .pattern(Some("^[a-z][a-z0-9_]*$"))
        .description(Some(format!(
            "A stable code. Those answered today: {listed}. New codes may be added (docs/compatibility.md): handle an unknown one by its HTTP status."
        )))
        .examples([serde_json::json!("insufficient_funds")])
        .build()
}

/// An order (every money-moving operation answers one; kind-specific fields are added).
#[derive(ToSchema)]
pub struct OrderView {
    pub order_id: String,
    pub out_order_no: Option<String>,
    /// recharge, payment, refund, freeze, withdrawal, adjustment (batch_payment for a batch's answer).
    pub kind: String,
    /// pending, processing, held, succeeded, failed, cancelled, partially_refunded, refunded.
    pub status: String,
    /// Decimal string in major units.
    pub amount: Option<String>,
    pub currency: String,
    pub account_id: Option<String>,
    pub created_at: Option<String>,
}

/// A page of orders, newest first.
#[derive(ToSchema)]
pub struct OrderPage {
    pub orders: Vec<OrderView>,
    pub next_cursor: Option<String>,
}

/// An account with its balances (decimal strings).
#[derive(ToSchema)]
pub struct AccountView {
    pub account_id: String,
    pub member_id: Option<String>,
    pub virtual_account_no: String,
    pub currency: String,
    pub status: String,
    #[schema(value_type = Option<Object>)]
    pub balances: Option<serde_json::Value>,
}

/// A member.
#[derive(ToSchema)]
pub struct MemberView {
    pub member_id: String,
    #[schema(rename = "type")]
    pub kind: String,
    pub name: String,
    pub status: String,
}

/// A bank card bound to an account.
#[derive(ToSchema)]
pub struct CardView {
    pub card_id: String,
    pub account_id: String,
    pub card_no_masked: String,
    pub holder_name: String,
    /// pending_verification, verified, locked, unbound.
    pub status: String,
}

/// One journal line of an account.
#[derive(ToSchema)]
pub struct EntryView {
    pub entry_id: String,
    pub order_id: Option<String>,
    pub kind: String,
    pub amount: String,
    /// debit or credit.
    pub direction: String,
    /// settled, unsettled or frozen.
    pub bucket: String,
    pub balance_after: String,
    pub created_at: String,
}

/// A page of journal lines, newest first.
#[derive(ToSchema)]
pub struct EntryPage {
    pub entries: Vec<EntryView>,
    pub next_cursor: Option<String>,
}

/// One operation of a bulk request: `op` names it, `body` is what its own endpoint takes
/// (`confirm`, `cancel` and `release_freeze` add the `order_id` to the body).
#[derive(ToSchema)]
pub struct BulkOperation {
    /// payment, recharge, refund, freeze, confirm, cancel, release_freeze.
    pub op: String,
    #[schema(value_type = Object)]
    pub body: serde_json::Value,
}

/// Up to 8,189 operations.
#[derive(ToSchema)]
pub struct BulkRequest {
    pub operations: Vec<BulkOperation>,
}

/// One result per operation, in order.
#[derive(ToSchema)]
pub struct BulkResult {
    pub status: u16,
    /// The operation's own answer: an order, or an ErrorBody.
    #[schema(value_type = Object)]
    pub body: serde_json::Value,
    pub replayed: Option<bool>,
}

/// The results of a bulk request.
#[derive(ToSchema)]
pub struct BulkResponse {
    pub results: Vec<BulkResult>,
}
