//! `POST /v1/recharges` (API.md): money in through a channel. The order is `pending` until the
//! channel's signed callback confirms it; the simulator channel confirms by itself.

use std::sync::Arc;

use actix_web::{post, web, HttpResponse};
use engine::ledger::command::{Command, Envelope};
use engine::ledger::state::IdempotencyRecord;
use engine::ledger::types::{OrderDetail, OrderId, Reply};
use engine::Engine;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::orders::{account, amount, currency, out_order_no, Fields, Prepared};
use crate::platforms::Platform;
use crate::signed::Signed;
use clearing_actor::channels::ChannelSet;
use clearing_actor::Clearing;

/// `POST /v1/recharges`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RechargeBody {
    pub out_order_no: String,
    pub account_id: String,
    pub amount: String,
    pub currency: String,
    pub channel: Option<String>,
}

/// A money-in channel by its optional name (when absent, the first configured one in the order's
/// currency).
pub fn money_in_channel(channels: &ChannelSet, name: Option<&str>, currency: &str) -> Result<u16, ApiError> {
    channels.money_in(name, currency).map(|c| c.id).ok_or_else(|| ApiError::invalid("unknown money-in channel", "channel"))
}

/// Checks a recharge request (whether its channel takes it too: `within_money_in_channel`); a
/// collection's when `card` names its card (the engine's `RequestCollection`, so that what the
/// engine holds under the number is compared with the command it will get: helper 118#3).
pub async fn prepare_recharge(
    engine: &Arc<Engine>,
    clearing: &Clearing,
    platform: &Platform,
    body: &RechargeBody,
    card: Option<u64>,
) -> Result<Prepared, ApiError> {
    let channels = clearing.channels();
    let number = out_order_no(&body.out_order_no, "out_order_no")?;
    let (currency_id, spec) = currency(engine, &body.currency)?;
    let minor = amount(&body.amount, &spec, "amount")?;
    let target = account(&body.account_id, "account_id")?;
    let mut envelope = Envelope {
        platform: platform.id,
        out_order_no: Some(number),
        command: match card {
            Some(card) => Command::RequestCollection { account: target, currency: currency_id, amount: minor, channel: 0, card },
            None => Command::RequestRecharge { account: target, currency: currency_id, amount: minor, channel: 0 },
        },
    };
    let channel = resolve_money_in_channel(engine, &channels, body.channel.as_deref(), spec.code_str(), &envelope).await?;
    set_money_in_channel(&mut envelope.command, channel);
    within_money_in_channel(engine, &channels, clearing.now_micros(), &mut envelope, body.channel.is_none()).await?;
    let channel = match envelope.command {
        Command::RequestRecharge { channel, .. } | Command::RequestCollection { channel, .. } => channel,
        _ => channel,
    };
    let mut view = Fields::default();
    view.value("out_order_no", &body.out_order_no);
    view.value("kind", &"recharge");
    view.value("amount", &spec.format(minor));
    view.value("currency", &body.currency);
    view.value("account_id", &body.account_id);
    view.value("channel", &channels.name(channel));
    Ok(Prepared::new(envelope, view, true))
}

/// Holds a new money-in order (a recharge, a collection, a direct payment) to what its channel
/// takes at `now` (`ChannelSet::money_in_refusal`: its currency, per-order limits, business days
/// and service window): 422 `no_channel_available` otherwise, as routing refuses a payout. An
/// order number the engine already holds a record of goes on to the engine whatever its
/// channel says now, which answers it as it did the first time (a replay) or as a conflict: a
/// limit the operator lowered or a window that closed since must not change an answer already
/// given. When the platform named no channel (`defaulted`), the channel is the one the held
/// order went through, not the one chosen today (a channel added or disabled since would make
/// the replay a conflict, and a platform that took that as a failure would pay twice). Other
/// commands pass. Part of `prepare_recharge` and `prepare_payment`, so every path of money in
/// (API, bulk, pages) has it.
pub(crate) async fn within_money_in_channel(
    engine: &Arc<Engine>,
    channels: &ChannelSet,
    now: u64,
    envelope: &mut Envelope,
    defaulted: bool,
) -> Result<(), ApiError> {
    let (Command::RequestRecharge { amount, channel, currency, .. }
    | Command::RequestCollection { amount, channel, currency, .. }
    | Command::RequestDirectPayment { amount, channel, currency, .. }) = envelope.command
    else {
        return Ok(());
    };
    let spec = engine.config().currencies.get(currency.0 as usize).copied();
    let taker = channels.get(channel);
    let reason = match (taker, spec) {
        (Some(taker), Some(spec)) => channels.money_in_refusal(taker, spec.code_str(), amount, now),
        _ => None,
    };
    if reason.is_none() && !defaulted {
        return Ok(());
    }
    let refusal = |reason: &str| {
        let (Some(taker), Some(spec)) = (taker, spec) else { return ApiError::new(422, "no_channel_available", "the channel cannot take this order") };
        let name = &taker.name;
        let (message, param) = match reason {
            "currency_not_served" => (format!("{name} takes {} only", taker.currency), "currency"),
            "below_order_minimum" | "above_order_maximum" => {
                (format!("{name} takes orders of {} to {}", spec.format(taker.order_min), spec.format(taker.order_max)), "amount")
            }
            "not_a_business_day" => (format!("{name} takes orders on business days only"), "channel"),
            _ => {
                let clock = |minute: u32| format!("{:02}:{:02}", minute / 60, minute % 60);
                (format!("{name} takes orders from {} to {} business-local time", clock(taker.window.0), clock(taker.window.1)), "channel")
            }
        };
        ApiError { param: Some(param.into()), ..ApiError::new(422, "no_channel_available", &message) }
    };
    let first_channel = held_order_channel(engine, channels, envelope).await?;
    match first_channel {
        Some(held) => {
            if let (true, Some(held)) = (defaulted, held) {
                set_money_in_channel(&mut envelope.command, held);
            }
            Ok(())
        }
        None => reason.map_or(Ok(()), |reason| Err(refusal(reason))),
    }
}

/// The record the engine holds under `probe`'s order number (its scope and the account it
/// debits name it; its content does not matter), if any: on that account's shard, or its cold
/// rows. Read off the async workers.
async fn record_under(engine: &Arc<Engine>, probe: &Envelope) -> Result<Option<IdempotencyRecord>, ApiError> {
    let (Some(key), Some(account)) = (engine::ledger::command::own_key(probe), probe.command.debited_account()) else { return Ok(None) };
    let (reading, shard) = (engine.clone(), account.shard(engine.config().shard_count));
    crate::error::blocking(move || reading.idempotency_record(shard, key)).await?.map_err(ApiError::from)
}

/// The engine's stored answer to `envelope`'s order number, as a replay, if the record it holds
/// is `envelope`'s command (its content); `None` otherwise.
async fn held_reply_if(engine: &Arc<Engine>, envelope: &Envelope) -> Result<Option<Reply>, ApiError> {
    let content = engine::ledger::command::content_hash(&envelope.command);
    let record = record_under(engine, envelope).await?;
    Ok(record.filter(|record| record.content == content && record.reply.is_ok()).map(|record| Reply { replayed: true, ..record.reply }))
}

/// Whether the engine holds an order under `probe`'s order number: a retry may go on past a
/// card's check only to replay an order that exists (a note can outlive a refused or never
/// applied order). A refusal the number keeps (journal format 5) is no order.
pub(crate) async fn order_held(engine: &Arc<Engine>, probe: &Envelope) -> Result<bool, ApiError> {
    Ok(record_under(engine, probe).await?.is_some_and(|record| record.reply.is_ok()))
}

/// Whether the engine holds any record under `probe`'s order number: an order, or a refusal the
/// number keeps. Either way the engine answers a repeat itself (the replay, or 409 for other
/// content) and nothing moves.
pub(crate) async fn number_recorded(engine: &Arc<Engine>, probe: &Envelope) -> Result<bool, ApiError> {
    Ok(record_under(engine, probe).await?.is_some())
}

/// What the engine holds of `envelope`'s order number: `None` if nothing; else the channel the
/// held order went through (`None` inside when it is not a money-in order). A refusal the number
/// keeps (journal format 5) names no order: its channel is the one among `channels` with which
/// `envelope` has the refused command's content, so that a repeat is the engine's replay of the
/// refusal whatever the channels are now (helper 117#4; `None` inside if none has). Read off the
/// async workers (the shard, or its cold rows).
async fn held_order_channel(engine: &Arc<Engine>, channels: &ChannelSet, envelope: &Envelope) -> Result<Option<Option<u16>>, ApiError> {
    // The record the engine would answer from: on the shard of the account the order debits.
    let (Some(key), Some(account)) = (engine::ledger::command::own_key(envelope), envelope.command.debited_account()) else { return Ok(None) };
    let shard_count = engine.config().shard_count;
    let reading = engine.clone();
    let held = crate::error::blocking(move || -> Result<Option<(IdempotencyRecord, Option<u16>)>, engine::EngineError> {
        let Some(record) = reading.idempotency_record(account.shard(shard_count), key)? else { return Ok(None) };
        if !record.reply.is_ok() {
            return Ok(Some((record, None)));
        }
        let order = OrderId(record.reply.id);
        let channel = reading.read_shard(order.shard(shard_count), move |state| {
            state.order(order).and_then(|o| match o.detail {
                OrderDetail::Recharge { channel } | OrderDetail::Payment { channel: Some(channel), .. } => Some(channel),
                _ => None,
            })
        })?;
        Ok(Some((record, channel)))
    })
    .await?
    .map_err(ApiError::from)?;
    Ok(held.map(|(record, channel)| {
        if record.reply.is_ok() {
            return channel;
        }
        // A kept refusal: the channel whose command has its content (a few hashes, on this
        // rare path only).
        let content_through = |id: u16| {
            let mut command = envelope.command.clone();
            set_money_in_channel(&mut command, id).then(|| engine::ledger::command::content_hash(&command))
        };
        channels.all().iter().map(|channel| channel.id).find(|id| content_through(*id) == Some(record.content))
    }))
}

/// Sets the channel of money-in `command` (a recharge, a collection, a direct payment) to `id`;
/// false for other commands.
fn set_money_in_channel(command: &mut Command, id: u16) -> bool {
    match command {
        Command::RequestRecharge { channel, .. } | Command::RequestCollection { channel, .. } | Command::RequestDirectPayment { channel, .. } => {
            *channel = id;
            true
        }
        _ => false,
    }
}

/// The money-in channel of a request: the one it names (enabled), else the first enabled one in
/// `currency`. When none resolves (the named one was disabled since, or none is enabled), an
/// order number the engine holds takes its held order's channel, so that its replay is still
/// answered as the first time; otherwise 400 `invalid_request` naming `channel`. `probe` is the
/// order's envelope (its channel not yet chosen).
pub(crate) async fn resolve_money_in_channel(
    engine: &Arc<Engine>,
    channels: &ChannelSet,
    name: Option<&str>,
    currency: &str,
    probe: &Envelope,
) -> Result<u16, ApiError> {
    match money_in_channel(channels, name, currency) {
        Ok(channel) => Ok(channel),
        Err(error) => held_order_channel(engine, channels, probe).await?.flatten().ok_or(error),
    }
}

/// Sends a newly accepted pending recharge or direct payment to its channel (a replay was sent
/// the first time).
pub fn dispatch(engine: &Engine, bank: &dyn bank::BankChannel, envelope: &Envelope, reply: &Reply) {
    if reply.is_ok() && !reply.replayed {
        if let Command::RequestRecharge { currency, amount, channel, .. } | Command::RequestDirectPayment { currency, amount, channel, .. } = envelope.command {
            let currency = engine.config().currencies[currency.0 as usize];
            bank.submit(bank::Request::MoneyIn { order: OrderId(reply.id), channel, amount, currency });
        }
    }
}

#[utoipa::path(post, path = "/v1/recharges", tag = "money", request_body = crate::recharges::RechargeBody, responses((status = 201, description = "Success", body = crate::schemas::OrderView), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)), security(("platform_signature" = [])))]
#[post("/v1/recharges")]
pub async fn create_recharge(signed: Signed, engine: web::Data<Arc<Engine>>, clearing: web::Data<Clearing>) -> Result<HttpResponse, ApiError> {
    let body = signed.json::<RechargeBody>()?;
    let (prepared, reply) = recharge(&engine, &clearing, &signed.platform, &body).await?;
    crate::orders::answer(prepared, &reply)
}

/// Checks a recharge, has the engine accept it and sends a new one to its channel (the API and
/// the pages share it); a refusal is in the reply (render it with `orders::answer`).
pub async fn recharge(engine: &Arc<Engine>, clearing: &Clearing, platform: &Platform, body: &RechargeBody) -> Result<(Prepared, Reply), ApiError> {
    // A number a collection holds is the engine's conflict (`RequestCollection` is its own
    // command; before session 61 a note read here refused it).
    let prepared = prepare_recharge(engine, clearing, platform, body, None).await?;
    let mut reply = execute_and_dispatch(engine, clearing.bank(), prepared.envelope.clone()).await?;
    if reply.is_ok() && reply.replayed && earlier_builds_collection(clearing, platform.id, &prepared.envelope).await? {
        reply = Reply::rejected(engine::result::ResultCode::IdempotencyConflict);
    }
    Ok((prepared, reply))
}

/// Whether plain recharge `envelope`, answered as a replay, replays a collection an earlier
/// build took (the same engine command then; its note names no card id): a conflict, as a
/// collection's number is for a plain recharge. One read, on replays only.
pub(crate) async fn earlier_builds_collection(clearing: &Clearing, platform: u32, envelope: &Envelope) -> Result<bool, ApiError> {
    let (Some(number), Command::RequestRecharge { .. }) = (envelope.out_order_no, &envelope.command) else { return Ok(false) };
    let asking = clearing.clone();
    let noted = crate::error::blocking(move || asking.collection_note(platform, number.as_str())).await?.map_err(|e| ApiError::unavailable(e.to_string()))?;
    Ok(noted.is_some_and(|note| note.card.is_none()))
}

/// Has the engine apply money-in order `envelope` and sends it to its bank if it is new, on a
/// task of its own: a request cut short once the engine accepted it (its client gone, a
/// proxy's timeout) still hands the order to the bank, whose retry would be a replay that
/// sends nothing (before session 60 it waited for the next start).
pub async fn execute_and_dispatch(engine: &Arc<Engine>, bank: &Arc<dyn bank::BankChannel>, envelope: Envelope) -> Result<Reply, ApiError> {
    let (engine, bank) = (engine.clone(), bank.clone());
    actix_web::rt::spawn(async move {
        let reply = crate::accounts::execute(&engine, envelope.clone()).await?;
        dispatch(&engine, bank.as_ref(), &envelope, &reply);
        Ok(reply)
    })
    .await
    .map_err(|_| ApiError::unavailable("the server is stopping".into()))?
}

/// Collection requests of one order number go one at a time (a stripe of numbers: their note,
/// the engine's answer and the note's fate together), so that one refused cannot drop the note
/// of the same number another has just had accepted.
static COLLECTING: [tokio::sync::Mutex<()>; 64] = [const { tokio::sync::Mutex::const_new(()) }; 64];

fn collecting_stripe(platform: u32, number: &str) -> &'static tokio::sync::Mutex<()> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (platform, number).hash(&mut hasher);
    &COLLECTING[(hasher.finish() % COLLECTING.len() as u64) as usize]
}

/// `POST /v1/collections` (代收, collection on behalf; an addition to API.md).
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CollectionBody {
    pub out_order_no: String,
    pub account_id: String,
    /// The member's verified card the money is collected from.
    pub card_id: String,
    pub amount: String,
    pub currency: String,
    pub channel: Option<String>,
}

/// Collects money from a member's verified card into their account through a money-in channel:
/// a recharge (same order numbers, `pending` until the channel confirms) that names the card.
#[utoipa::path(post, path = "/v1/collections", tag = "money", request_body = crate::recharges::CollectionBody, responses((status = 201, description = "Success", body = crate::schemas::OrderView), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)), security(("platform_signature" = [])))]
#[post("/v1/collections")]
pub async fn create_collection(
    signed: Signed,
    engine: web::Data<Arc<Engine>>,
    clearing: web::Data<Clearing>,
    cards: web::Data<Arc<crate::cards::Cards>>,
) -> Result<HttpResponse, ApiError> {
    let body = signed.json::<CollectionBody>()?;
    let (prepared, reply) = collect(&engine, &clearing, &cards, &signed.platform, body).await?;
    crate::orders::answer(prepared, &reply)
}

/// Checks a collection (the account is the platform's, the card a verified one of that
/// account), has the engine accept it as a recharge naming the card and sends a new one to the
/// bank (the API and the pages share it); a refusal is in the reply.
pub async fn collect(
    engine: &Arc<Engine>,
    clearing: &Clearing,
    cards: &Arc<crate::cards::Cards>,
    platform: &Platform,
    body: CollectionBody,
) -> Result<(Prepared, Reply), ApiError> {
    let account = crate::orders::account(&body.account_id, "account_id")?;
    crate::accounts::owner_of(engine, platform.id, account).await?;
    let card = match cards.verified(platform.id, account, &body.card_id, "collections come only from verified cards").await {
        Ok(card) => card,
        Err(refusal) => {
            // A retry of a collection this card was accepted for (unbound or locked since):
            // answered as its order is (before session 60, 404 or 422 for an order on its way,
            // which a platform could take for "not done" and collect again under another
            // number).
            let (asking, platform_id, number) = (clearing.clone(), platform.id, body.out_order_no.clone());
            let note = crate::error::blocking(move || asking.collection_note(platform_id, &number)).await?.map_err(|e| ApiError::unavailable(e.to_string()))?;
            let probe = Envelope {
                platform: platform.id,
                out_order_no: engine::ledger::command::OutOrderNo::new(&body.out_order_no),
                command: Command::RequestRecharge { account, currency: engine::money::CurrencyId(0), amount: 0, channel: 0 },
            };
            match (note, cards.any_named(platform.id, account, &body.card_id).await?) {
                (Some(note), Some(card))
                    if note.card_no == card.card_no
                        && note.account == account
                        && card.status != "pending_verification"
                        && order_held(engine, &probe).await? =>
                {
                    card
                }
                _ => return Err(refusal),
            }
        }
    };
    let recharge =
        RechargeBody { out_order_no: body.out_order_no, account_id: body.account_id, amount: body.amount, currency: body.currency, channel: body.channel };
    let mut prepared = prepare_recharge(engine, clearing, platform, &recharge, Some(card.id)).await?;
    prepared.body.value("card_id", &body.card_id).value("collection", &true);
    // The card goes into a note before the engine sees the order: a start hands a collection
    // still pending to the bank again with its card (`Clearing::note_collection`).
    let number = prepared.envelope.out_order_no.map(|number| number.as_str().to_string()).unwrap_or_default();
    // The engine's command names the card (its record's id, never its number): a plain
    // recharge and a collection under one number, or two collections from different cards,
    // are its conflicts.
    let Command::RequestCollection { amount, currency, channel, .. } = prepared.envelope.command else {
        return Err(ApiError::unavailable("a collection is prepared as a collection".into()));
    };
    let legacy = Envelope { command: Command::RequestRecharge { account, currency, amount, channel }, ..prepared.envelope.clone() };
    let (engine, clearing, envelope, platform_id, card_no, card_id) =
        (engine.clone(), clearing.clone(), prepared.envelope.clone(), platform.id, card.card_no, card.id);
    // On a task of its own, one request of a number at a time: a request cut short neither
    // leaves an accepted order unsent nor a refused one's note behind.
    let reply = actix_web::rt::spawn(async move {
        let _one_number_at_a_time = collecting_stripe(platform_id, &number).lock().await;
        // An order under the number with no collection's note is a plain recharge's (or a
        // collection's from before notes): refused before a note is written, as the engine
        // would refuse it. A note on a plain recharge of a build before session 61 (a stop
        // between the note and its removal below) would be taken by a start for a collection's.
        let (asking, asked) = (clearing.clone(), number.clone());
        let noted_before =
            crate::error::blocking(move || asking.collection_note(platform_id, &asked)).await?.map_err(|e| ApiError::unavailable(e.to_string()))?;
        if noted_before.is_none() && order_held(&engine, &envelope).await? {
            return Err(ApiError::new(409, "idempotency_conflict", "this out_order_no was used with another body"));
        }
        let note = clearing_actor::payouts::CollectionNote { account, amount, card_no: card_no.clone(), card: Some(card_id) };
        // An earlier build's note of this very collection (no card id): its order is a plain
        // recharge's command, which the engine answers this one as a conflict of.
        let earlier_build = noted_before.as_ref().is_some_and(|noted| noted.card.is_none() && noted.same_collection(&note));
        // This build's note of the same collection from another bind of the card (unbound and
        // bound again since; the first request stopped before the engine held an order): the
        // note takes this bind's id, which the command names, or a start would not know the
        // order for this collection. With an order held, the engine answers (a conflict).
        let other_bind = noted_before.as_ref().is_some_and(|noted| noted.card.is_some() && noted.card != note.card && noted.same_collection(&note));
        if other_bind && !order_held(&engine, &envelope).await? {
            let (replacing, replaced_number, replacement) = (clearing.clone(), number.clone(), note.clone());
            crate::error::blocking(move || replacing.replace_collection_note(platform_id, &replaced_number, &replacement))
                .await?
                .map_err(|e| ApiError::unavailable(e.to_string()))?;
        }
        let (noting, noted_number) = (clearing.clone(), number.clone());
        // A note of this number naming another card, account or amount: the number was used
        // for another collection (a card is never swapped under an order).
        let noted_now = crate::error::blocking(move || noting.note_collection(platform_id, &noted_number, &note)).await?.map_err(|e| match e {
            clearing_actor::ClearingError::IdempotencyConflict => ApiError::new(409, "idempotency_conflict", "this out_order_no was used with another body"),
            other => ApiError::unavailable(other.to_string()),
        })?;
        let mut reply = crate::accounts::execute(&engine, envelope).await?;
        if reply.code == engine::result::ResultCode::IdempotencyConflict && earlier_build {
            // A retry of a collection an earlier build took: answered as its order's replay
            // when the engine's record of the number is that plain recharge's command. Read,
            // never written (a write could open an order of its own).
            if let Some(earlier) = held_reply_if(&engine, &legacy).await? {
                reply = earlier;
            }
        }
        // Refused (a plain recharge's number, another collection's): the note it wrote goes.
        // One left by a stop is harmless: a start sends a pending recharge as a collection
        // only if the engine's record of its number is that collection
        // (`Actor::collection_of`).
        if !reply.is_ok() && noted_now {
            let (forgetting, number) = (clearing.clone(), number.clone());
            if let Err(error) = crate::error::blocking(move || forgetting.forget_collection(platform_id, &number)).await? {
                tracing::error!("collection note of an order that is not a collection left: {error}");
            }
        }
        if reply.is_ok() && !reply.replayed {
            let currency = engine.config().currencies[currency.0 as usize];
            clearing.bank().submit(bank::Request::Collection { order: OrderId(reply.id), channel, amount, currency, card_no });
        }
        Ok::<Reply, ApiError>(reply)
    })
    .await
    .map_err(|_| ApiError::unavailable("the server is stopping".into()))??;
    Ok((prepared, reply))
}

/// Registers the recharge routes.
pub fn routes(config: &mut web::ServiceConfig) {
    config.service(create_recharge).service(create_collection);
}
