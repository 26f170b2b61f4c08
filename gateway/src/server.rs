//! The HTTP server: bounded connections and bodies, health and readiness, graceful shutdown.

use std::sync::Arc;

use actix_web::{web, App, HttpServer};
use engine::Engine;

use crate::admin::AdminToken;
use crate::auth::NonceCache;
use crate::members::Members;
use crate::platforms::Platforms;
use crate::replay::DurableNonces;

/// Limits of the HTTP edge (DESIGN.md invariants 10 and 12).
#[derive(Clone, Debug)]
pub struct HttpLimits {
    /// Concurrent connections per worker.
    pub connections_max: usize,
    /// Largest request body in bytes (a platform's quota may be lower).
    pub body_bytes_max: usize,
    /// Worker threads.
    pub workers: usize,
    /// How long a client may take to send a request's head (line and headers); past it the
    /// connection is answered 408 and closed. Also bounds a new connection that sends nothing.
    pub head_timeout: std::time::Duration,
    /// How long a signed request's body may take to arrive once its head is in.
    pub body_timeout: std::time::Duration,
    /// How long an idle kept-alive connection stays open.
    pub keep_alive: std::time::Duration,
    /// How long the server waits for a client to close its side after the server closed.
    pub disconnect_timeout: std::time::Duration,
    /// Each platform's quotas (rate, in flight, nonce share, body size).
    pub quotas: crate::quotas::QuotaConfig,
}

impl Default for HttpLimits {
    fn default() -> HttpLimits {
        HttpLimits {
            connections_max: 1024,
            body_bytes_max: 16 << 20,
            workers: 2,
            head_timeout: std::time::Duration::from_secs(5),
            body_timeout: std::time::Duration::from_secs(10),
            keep_alive: std::time::Duration::from_secs(5),
            disconnect_timeout: std::time::Duration::from_secs(1),
            quotas: crate::quotas::QuotaConfig::default(),
        }
    }
}

/// What the gateway limits beyond HTTP (config `[secrets]`, `[cards]`).
#[derive(Clone, Debug)]
pub struct Protections {
    /// Seconds a platform's previous secret verifies after a rotation unless the request says.
    pub rotation_overlap_seconds: u64,
    /// Cards (micro-deposits) one account may bind per business day.
    pub card_binds_per_account_per_day: u32,
    /// How long operators' portal sessions last (`[portal]`).
    pub sessions: crate::portal::SessionLimits,
    /// Proxies in front of the portals whose `X-Forwarded-For` names the client (`[portal]
    /// trusted_proxies`): the address the audit log and the sign-in limit see.
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

impl Default for Protections {
    fn default() -> Protections {
        Protections {
            rotation_overlap_seconds: crate::platforms::ROTATION_OVERLAP_SECONDS_DEFAULT,
            card_binds_per_account_per_day: crate::cards::BINDS_PER_ACCOUNT_PER_DAY_DEFAULT,
            sessions: crate::portal::SessionLimits::default(),
            trusted_proxies: Vec::new(),
        }
    }
}

/// Everything the handlers share, loaded once at start.
pub struct Services {
    pub engine: Arc<Engine>,
    pub token: AdminToken,
    pub platforms: Arc<Platforms>,
    pub members: Arc<Members>,
    pub passwords: Arc<crate::passwords::Passwords>,
    pub simulator: banksim::Simulator,
    pub clearing: clearing_actor::Clearing,
    pub cards: Arc<crate::cards::Cards>,
    pub notifications: Arc<crate::notifications::Notifications>,
    pub store: Arc<dyn storage::Store>,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// The webhook delivery workers, woken when a platform sets its webhook.
    pub webhooks: crate::events::Delivery,
    /// Agreement templates and members' signatures.
    pub agreements: Arc<crate::agreements::Agreements>,
    /// The members' H5 links and sessions (in memory).
    pub h5: Arc<crate::h5::H5Sessions>,
    /// Operators, their sessions, the audit log and approvals.
    pub portal: Arc<crate::portal::Portal>,
    /// The first system operator when this start made it (printed once by the caller).
    pub first_operator: Option<crate::portal::FirstOperator>,
    /// Backups while serving (`POST /admin/backups`); off unless the caller gives a taker.
    pub backups: Arc<crate::backups::Backups>,
}

/// What clearing is started with: the configured channels, the business calendar and the daily
/// settlement's cut-off.
pub struct ClearingSetup {
    pub channels: Vec<clearing_actor::channels::Channel>,
    pub calendar: clearing_actor::calendar::Calendar,
    pub settlement_cutoff_minute: Option<u32>,
    /// Days past today a settlement run by hand may name.
    pub settlement_days_ahead_max: u32,
}

impl Services {
    /// Loads the gateway's records from `store` (platforms, members, passwords), starts the bank
    /// simulator and the clearing actor (which resends what waited for a bank's verdict).
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        engine: Arc<Engine>,
        store: Arc<dyn storage::Store>,
        master_key: crate::secrets::MasterKey,
        token: AdminToken,
        metrics: metrics_exporter_prometheus::PrometheusHandle,
        simulator: banksim::SimulatorConfig,
        webhooks: crate::events::WebhookConfig,
        setup: ClearingSetup,
        protections: Protections,
    ) -> Result<Services, String> {
        let channel_key = master_key.channel_key("simulator");
        let platforms = Arc::new(Platforms::load(store.clone(), master_key)?);
        platforms.set_rotation_overlap(protections.rotation_overlap_seconds);
        let webhooks = crate::events::start_delivery(engine.clone(), platforms.clone(), store.clone(), webhooks)?;
        let simulator = banksim::Simulator::start(simulator, channel_key, store.clone())?;
        let mut table = clearing_actor::channels::ChannelTable::new(setup.channels, setup.calendar).map_err(|e| e.to_string())?;
        table.load_settings(store.as_ref(), &engine.config().currencies).map_err(|e| e.to_string())?;
        let (terms_engine, terms_platforms) = (engine.clone(), platforms.clone());
        let terms: clearing_actor::TermsSource = Arc::new(move |day| crate::settlements::terms(&terms_engine, &terms_platforms.all(), day));
        let config = clearing_actor::ClearingConfig {
            settlement_cutoff_minute: setup.settlement_cutoff_minute,
            settlement_days_ahead_max: setup.settlement_days_ahead_max,
            ..clearing_actor::ClearingConfig::default()
        };
        let bank: Arc<dyn bank::BankChannel> = Arc::new(simulator.clone());
        let clock = Arc::new(clearing_actor::calendar::SystemClock);
        let (portal, first_operator) = crate::portal::Portal::load(store.clone(), protections.sessions, protections.trusted_proxies.clone())?;
        let clearing = clearing_actor::Clearing::start(engine.clone(), store.clone(), bank, table, clock, terms, config).map_err(|e| e.to_string())?;
        Ok(Services {
            clearing,
            simulator,
            engine,
            token,
            platforms,
            members: Arc::new(Members::load(store.clone())?),
            passwords: Arc::new(crate::passwords::Passwords::new(store.clone())),
            cards: Arc::new(crate::cards::Cards::load(store.clone(), protections.card_binds_per_account_per_day)?),
            notifications: Arc::new(crate::notifications::Notifications::load(store.clone())?),
            agreements: Arc::new(crate::agreements::Agreements::load(store.clone())?),
            h5: Arc::new(crate::h5::H5Sessions::new()),
            store,
            metrics,
            webhooks,
            portal: Arc::new(portal),
            first_operator,
            backups: Arc::new(crate::backups::Backups::off()),
        })
    }
}

/// Binds `listen` and returns the running server and the addresses it bound (port 0 picks one).
/// Actix stops it gracefully on SIGINT/SIGTERM, finishing requests in flight.
/// SIGTERM or SIGINT, as a future for a graceful stop. The handlers are installed here, before
/// the caller prints where the server listens, so that a stop sent the moment the address is
/// known is a graceful stop (actix's own handlers are installed only when the server is first
/// polled, and a SIGTERM before that killed the process). Must be called inside the runtime.
fn stop_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use actix_web::rt::signal::unix::{signal, SignalKind};
    let (mut terminate, mut interrupt) = (signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?);
    Ok(std::future::poll_fn(move |cx| {
        if terminate.poll_recv(cx).is_ready() || interrupt.poll_recv(cx).is_ready() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    }))
}

pub fn bind(services: Services, listen: &str, limits: HttpLimits) -> std::io::Result<(actix_web::dev::Server, Vec<std::net::SocketAddr>)> {
    let engine = web::Data::new(services.engine);
    let token = web::Data::new(services.token);
    let platforms = web::Data::new(services.platforms);
    let members = web::Data::new(services.members);
    let passwords = web::Data::new(services.passwords);
    let simulator = web::Data::new(services.simulator);
    let cards = web::Data::new(services.cards);
    let notifications = web::Data::new(services.notifications);
    let store = web::Data::new(services.store);
    let clearing = web::Data::new(services.clearing);
    let metrics = web::Data::new(services.metrics);
    let webhooks = web::Data::new(services.webhooks);
    let agreements = web::Data::new(services.agreements);
    let h5 = web::Data::new(services.h5);
    let portal = web::Data::new(services.portal);
    let backups = web::Data::new(services.backups);
    let invariants_watch = web::Data::new(crate::metrics::InvariantsWatch::default());
    let nonces = NonceCache::new();
    let durable_nonces = Arc::new(DurableNonces::new(store.get_ref().clone()));
    let restored = durable_nonces.restore(&nonces, crate::signed::unix_seconds()).map_err(std::io::Error::other)?;
    if restored > 0 {
        println!("replay protection: {restored} nonces of the signing window restored");
    }
    let nonces = web::Data::new(nonces);
    let durable_nonces = web::Data::new(durable_nonces);
    let quotas = web::Data::new(crate::quotas::Quotas::new(limits.quotas.clone()));
    let body_limits = web::Data::new(crate::signed::BodyLimits { timeout: limits.body_timeout, bytes_max: limits.body_bytes_max });
    let (engine_at_start, simulator_at_start, cards_at_start) = (engine.get_ref().clone(), simulator.get_ref().clone(), cards.get_ref().clone());
    let (bank_at_start, resumed_at_start) = (clearing.bank().clone(), clearing.resumed());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(engine.clone())
            .app_data(token.clone())
            .app_data(platforms.clone())
            .app_data(members.clone())
            .app_data(passwords.clone())
            .app_data(simulator.clone())
            .app_data(cards.clone())
            .app_data(notifications.clone())
            .app_data(store.clone())
            .app_data(clearing.clone())
            .app_data(metrics.clone())
            .app_data(webhooks.clone())
            .app_data(agreements.clone())
            .app_data(h5.clone())
            .app_data(portal.clone())
            .app_data(backups.clone())
            .app_data(invariants_watch.clone())
            .wrap(actix_web::middleware::from_fn(crate::quotas::run_to_end))
            .wrap(actix_web::middleware::ErrorHandlers::new().default_handler(crate::error::json_errors))
            .wrap(actix_web::middleware::from_fn(crate::metrics::record_latency))
            .wrap(actix_web::middleware::from_fn(crate::admin::token_first))
            .wrap(actix_web::middleware::from_fn(crate::deadline::body_deadline))
            // Outermost: every response (errors made by the layers inside included) carries the
            // request id, and every log line of the request is inside its span.
            .wrap(actix_web::middleware::from_fn(crate::request_id::request_span))
            .app_data(nonces.clone())
            .app_data(durable_nonces.clone())
            .app_data(quotas.clone())
            .app_data(body_limits.clone())
            .app_data(web::PayloadConfig::new(limits.body_bytes_max))
            .app_data(web::QueryConfig::default().error_handler(|error, _| crate::error::query_error(&error).into()))
            .app_data(web::PathConfig::default().error_handler(|error, _| crate::error::path_error(&error).into()))
            .app_data(web::JsonConfig::default().limit(limits.body_bytes_max).error_handler(|error, _| crate::error::json_config_error(&error).into()))
            .service(crate::health::healthz)
            .service(crate::health::readyz)
            .configure(crate::admin::routes)
            .configure(crate::backups::routes)
            .configure(crate::settlements::routes)
            .configure(crate::commission::routes)
            .configure(crate::offline::routes)
            .configure(crate::reconcile::routes)
            .configure(crate::v1::routes)
            .configure(crate::accounts::routes)
            .configure(crate::passwords::routes)
            .configure(crate::payments::routes)
            .configure(crate::orders::routes)
            .configure(crate::recharges::routes)
            .configure(crate::bulk::routes)
            .configure(crate::events::routes)
            .configure(crate::entries::routes)
            .configure(crate::cards::routes)
            .configure(crate::withdrawals::routes)
            .configure(crate::notifications::routes)
            .configure(crate::simulator::routes)
            .configure(crate::metrics::routes)
            .configure(crate::agreements::routes)
            .configure(crate::h5::routes)
            .configure(crate::h5_wallet::routes)
            .configure(crate::h5_cashier::routes)
            .configure(crate::openapi::routes)
            .configure(crate::portal::routes)
            .default_service(web::to(crate::openapi::unrouted))
    })
    .workers(limits.workers)
    .max_connections(limits.connections_max)
    .client_request_timeout(limits.head_timeout)
    .client_disconnect_timeout(limits.disconnect_timeout)
    .keep_alive(limits.keep_alive)
    .shutdown_signal(stop_signal()?)
    .bind(listen)?;
    let addresses = server.addrs();
    if let Some(address) = addresses.first() {
        simulator_at_start.set_callback_url(format!("http://{address}/channels/simulator/callback"));
    }
    // The clearing actor counted today's payouts against their daily caps and handed the bank
    // again what waited for its verdict when the server last stopped.
    if resumed_at_start > 0 {
        println!("clearing: {resumed_at_start} orders waiting for a verdict were sent to the bank again");
    }
    let deposits = cards_at_start.resume_deposits(&engine_at_start, &simulator_at_start, bank_at_start.as_ref()).map_err(std::io::Error::other)?;
    if deposits > 0 {
        println!("simulator: {deposits} card verification deposits were asked of the bank again");
    }
    Ok((server.run(), addresses))
}
