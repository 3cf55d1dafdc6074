//! Wiring: `App::build(config)` binds the appservice port and opens the database;
//! `run_until_stopped(shutdown)` runs the HTTP server, the Telegram poller, the two bridge
//! workers, the announcer and the config watcher until `shutdown` resolves, then stops them.
//!
//! On PostgreSQL several instances may run on one database (an active/standby pair, README
//! "Two hosts"): each serves the appservice API at once and stores what the homeserver
//! delivers (the inbox is shared), but only the one holding the lease (a session advisory lock,
//! see `storage::DaemonLock`) is *active*: it polls Telegram and bridges. The others are
//! *standby*: `/ready` says so, they warm up their own encryption devices, and they try the
//! lease every second, so one takes over within seconds of the active one's death. An active
//! instance that loses the lease stops at once (and exits with an error: its service manager
//! starts it again, as a standby).

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

use crate::bridge::lanes::{run_lanes, supervise};
use crate::bridge::{Bridge, DoneAt, run_worker};
use crate::config::{Config, Registration};
use crate::error::{Error, Result};
use crate::matrix::appservice::{AsState, router};
use crate::matrix::client::MatrixClient;
use crate::storage::{Direction, Store};
use tracing::Instrument;

pub struct App {
    /// SQLite: keeps a second daemon off the same database for as long as this one runs (taken
    /// in `build`). PostgreSQL: `None`; the lease is waited for in `run_until_stopped`.
    lock: Option<crate::storage::DaemonLock>,
    listener: TcpListener,
    bridge: Arc<Bridge>,
    registration: Registration,
    /// The file to re-read on SIGHUP or when it changes; `None` for the embedded default.
    config_path: Option<PathBuf>,
}

impl App {
    pub async fn build(cfg: Config) -> Result<App> {
        let registration = Registration::load(&cfg.appservice.registration)?;
        let lock = match crate::storage::Backend::of(&cfg.database) {
            Some(crate::storage::Backend::Postgres) => None,
            _ => Some(Store::lock_for_daemon(&cfg.database).await?),
        };
        let store = Store::open(&cfg.database).await?;
        tracing::info!(
            backend = store.backend().name(),
            database = %crate::storage::redacted(&cfg.database),
            "database open"
        );
        let mx = MatrixClient::new(&cfg.homeserver.url, &registration.as_token).acting_as(cfg.bot_user_id());
        if registration.sender_localpart == cfg.appservice.bot_localpart {
            tracing::warn!(
                "the registration's sender_localpart is the bot: Synapse will not let it sync, so encrypted \
                 rooms cannot be decrypted; regenerate the registration (`tgmx generate-registration`) and \
                 register it again"
            );
        }
        let api_url = url::Url::parse(&cfg.gateway.telegram.api_url)
            .map_err(|e| Error::Config(format!("`gateway.telegram.api_url`: {e}")))?;
        let token = match cfg.telegram_token() {
            Ok(t) => t.to_owned(),
            Err(e) if cfg.gateway.telegram.enabled => return Err(e),
            Err(_) => String::new(),
        };
        let tg = crate::telegram::TelegramSender::new(
            token,
            api_url,
            cfg.gateway.telegram.poll_timeout,
            cfg.gateway.telegram.per_chat_per_minute,
            cfg.gateway.telegram.per_bot_per_second,
        );
        if cfg.gateway.telegram.enabled {
            check_bot_token(&tg).await?;
        }
        let listener = TcpListener::bind(cfg.appservice.listen).await.map_err(|e| {
            Error::Config(format!(
                "`appservice.listen`: cannot bind {}: {e}",
                cfg.appservice.listen
            ))
        })?;
        let bridge = Arc::new(Bridge::new(cfg, store, mx, tg));
        Ok(App {
            lock,
            listener,
            bridge,
            registration,
            config_path: None,
        })
    }

    /// Watch this file for live reloads (SIGHUP or a change of its content).
    pub fn with_config_path(mut self, path: PathBuf) -> App {
        self.bridge.portals().set_config_file(path.clone());
        self.config_path = Some(path);
        self
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or_default()
    }

    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let App {
            lock,
            listener,
            bridge,
            registration,
            config_path,
        } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let mx_wake = Arc::new(Notify::new());
        let tg_wake = Arc::new(Notify::new());
        let instance = bridge.cfg().instance_name();
        // While this instance is a standby: who holds the lease (for `/ready`).
        let standby: Arc<std::sync::Mutex<Option<String>>> = Arc::default();

        let user_bridge = bridge.clone();
        let probe_bridge = bridge.clone();
        // Why the Bot API cannot be reached, while it cannot (set by the poller).
        let (reach_tx, probe_reach) = watch::channel(None);
        let state = AsState {
            probe: {
                let (instance, standby) = (instance.clone(), standby.clone());
                Arc::new(move || crate::matrix::appservice::Probe {
                    mode: probe_bridge.mode().as_str(),
                    setup_done: probe_bridge.portals().is_ready(),
                    telegram: probe_reach.borrow().clone(),
                    instance: instance.clone(),
                    standby: standby.lock().map(|s| s.clone()).unwrap_or_default(),
                })
            },
            store: bridge.store().clone(),
            hs_token: registration.hs_token.as_str().into(),
            wake: mx_wake.clone(),
            delivered: {
                let b = bridge.clone();
                Arc::new(move |events| b.note_delivered(events))
            },
            own_echo: {
                let b = bridge.clone();
                Arc::new(move |ev| b.is_own_echo(ev))
            },
            user_exists: Arc::new(move |user: &str| {
                let b = user_bridge.clone();
                let user = user.to_owned();
                Box::pin(async move { b.user_exists(&user).await })
            }),
        };
        tracing::info!(addr = %listener.local_addr()?, "appservice listening");
        let http = tokio::spawn(crate::matrix::appservice::serve(
            listener,
            router(state),
            stop_rx.clone(),
        ));
        let mut shutdown = std::pin::pin!(shutdown);

        // PostgreSQL: the lease, waited for as a standby while another instance holds it.
        // `waited`: another instance held it when this one started (not a single daemon's
        // start, even one whose host name changed since its last run).
        let (mut lock, waited) = match lock {
            Some(lock) => (lock, false),
            None => {
                *standby.lock().unwrap_or_else(|e| e.into_inner()) = Some("nobody yet (starting)".to_owned());
                tokio::select! {
                    _ = &mut shutdown => {
                        tracing::info!("shutting down (standby)");
                        let _ = stop_tx.send(true);
                        let _ = tokio::time::timeout(Duration::from_secs(12), http).await;
                        return Ok(());
                    }
                    lock = wait_as_standby(&bridge, &instance, &standby) => lock?,
                }
            }
        };
        let previous = bridge.store().lease_taken(&instance).await?;
        *standby.lock().unwrap_or_else(|e| e.into_inner()) = None;
        tracing::info!(
            previous = previous.as_deref().unwrap_or("none"),
            "lease taken: this instance ({instance}) is active"
        );
        // A standby read its file at its start; the file may have changed since. (`previous` is
        // none when the other instance predates the lease records.)
        let took_over_from = waited.then(|| previous.unwrap_or_else(|| "the previous daemon".to_owned()));
        if waited {
            // The old active instance may still run for a moment if its session was ended
            // under it (it stops as soon as it sees the lease taken): wait that out.
            tokio::time::sleep(crate::storage::TAKEOVER_FENCE).await;
        }
        if waited && let Some(path) = &config_path {
            match Config::load(path) {
                Ok(cfg) => bridge.refresh_config(&cfg),
                Err(e) => tracing::error!("the config file is invalid; keeping the one read at the start: {e}"),
            }
        }
        // Right after a start the homeserver delivers what it held back: gaps are possible.
        bridge.suspect_gaps();
        bridge
            .store()
            .set_kv("daemon_pid", &std::process::id().to_string())
            .await?;
        bridge.load_portals().await?;
        bridge.init_mode(took_over_from.as_deref()).await?;

        // Every long-running task runs under the supervisor: a panic is logged and the task
        // started again (see `bridge::lanes::supervise`).
        let mut tasks = tokio::task::JoinSet::new();
        let stop = stop_rx.clone();
        let mut run = |name: &'static str, task: Box<dyn Fn() -> futures::future::BoxFuture<'static, ()> + Send>| {
            tasks.spawn(supervise(name, stop.clone(), task));
        };
        let (b, s) = (bridge.clone(), stop_rx.clone());
        run("setup", Box::new(move || Box::pin(setup_loop(b.clone(), s.clone()))));
        let (b, s) = (bridge.clone(), stop_rx.clone());
        run(
            "announcer",
            Box::new(move || Box::pin(b.clone().run_announcer(s.clone()))),
        );
        let (b, s) = (bridge.clone(), stop_rx.clone());
        run(
            "fallback timer",
            Box::new(move || {
                let (b, s) = (b.clone(), s.clone());
                Box::pin(async move { b.run_fallback_timer(s).await })
            }),
        );
        let (b, s) = (bridge.clone(), stop_rx.clone());
        run(
            "management rollcalls",
            Box::new(move || Box::pin(b.clone().run_management(s.clone()))),
        );
        if let Some(path) = config_path {
            let (b, s) = (bridge.clone(), stop_rx.clone());
            run(
                "config watcher",
                Box::new(move || Box::pin(watch_config(b.clone(), path.clone(), s.clone()))),
            );
        }
        if bridge.cfg().telegram_token().is_ok() {
            let (b, s, w, reach) = (bridge.clone(), stop_rx.clone(), tg_wake.clone(), Arc::new(reach_tx));
            run(
                "telegram poller",
                Box::new(move || {
                    Box::pin(crate::telegram::poller::run(
                        b.telegram(),
                        b.store().clone(),
                        w.clone(),
                        b.cfg().gateway.telegram.poll_timeout,
                        b.reading_watch(),
                        reach.clone(),
                        s.clone(),
                    ))
                }),
            );
        }
        let (b, s, w) = (bridge.clone(), stop_rx.clone(), tg_wake.clone());
        run(
            "telegram->matrix lanes",
            Box::new(move || Box::pin(run_tg_lanes(b.clone(), w.clone(), s.clone()))),
        );
        let (b, s, w) = (bridge.clone(), stop_rx.clone(), mx_wake.clone());
        run(
            "catch-up",
            Box::new(move || Box::pin(catch_up_loop(b.clone(), w.clone(), s.clone()))),
        );
        let (b, s, w) = (bridge.clone(), stop_rx.clone(), mx_wake.clone());
        run(
            "/sync follower",
            Box::new(move || Box::pin(b.clone().follow_sync(w.clone(), s.clone()))),
        );
        let (b, s, w) = (bridge.clone(), stop_rx.clone(), mx_wake.clone());
        run(
            "matrix->telegram lanes",
            Box::new(move || Box::pin(run_mx_lanes(b.clone(), w.clone(), s.clone()))),
        );
        let s = stop_rx.clone();
        run(
            "memory release",
            Box::new(move || Box::pin(release_memory_after_bursts(s.clone()))),
        );
        let (store, s) = (bridge.store().clone(), stop_rx.clone());
        run(
            "storage probe",
            Box::new(move || Box::pin(probe_storage(store.clone(), s.clone()))),
        );
        // Whether a standby instance said lately that it is alive (the lease keeper gives way
        // when it cannot confirm the lease only if one is).
        let standby_around = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (store, s, name, around) = (
            bridge.store().clone(),
            stop_rx.clone(),
            instance.clone(),
            standby_around.clone(),
        );
        run(
            "heartbeat",
            Box::new(move || {
                Box::pin(heartbeat(
                    store.clone(),
                    name.clone(),
                    "active",
                    Some(around.clone()),
                    s.clone(),
                ))
            }),
        );
        let (store, s, w) = (bridge.store().clone(), stop_rx.clone(), mx_wake.clone());
        run(
            "inbox listener",
            Box::new(move || Box::pin(listen_inbox(store.clone(), w.clone(), s.clone()))),
        );

        // Stop on the signal, or when a task keeps crashing (restarting it cannot help).
        let mut gave_up = None;
        // PostgreSQL: the lease is kept (taken again after a lost connection); lost to another
        // instance, or not confirmed for a few seconds, this daemon stops.
        let around = standby_around.clone();
        let mut keeper = std::pin::pin!(lock.keep(move || around.load(std::sync::atomic::Ordering::Relaxed)));
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                kept = &mut keeper => {
                    let e = kept.err().unwrap_or_else(|| Error::Internal("daemon lock keeper ended".into()));
                    // Another instance may be bridging already: no wind-down (a send finishing
                    // now could be the second one). The binary exits at once; what was in flight
                    // is left as after a SIGKILL.
                    tracing::error!("stopping at once: {e}");
                    let _ = stop_tx.send(true);
                    http.abort();
                    return Err(e);
                }
                done = tasks.join_next() => match done {
                    Some(Ok(Err(e))) => {
                        tracing::error!("stopping: {e}");
                        gave_up = Some(e);
                        break;
                    }
                    Some(_) => {}
                    None => {
                        (&mut shutdown).await;
                        break;
                    }
                },
            }
        }
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
        bridge.shutdown_devices();
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if let Some(e) = gave_up {
            http.abort();
            return Err(e);
        }
        match tokio::time::timeout(Duration::from_secs(12), http).await {
            Ok(Ok(Err(e))) => Err(Error::Io(e)),
            _ => Ok(()),
        }
    }
}

/// The standby's part of an active/standby pair (PostgreSQL): say so every few seconds
/// (`tgmx status` lists the instances), start this instance's own encryption devices so that
/// senders share their room keys with them before they are needed, and wait for the lease.
async fn wait_as_standby(
    bridge: &Arc<Bridge>,
    instance: &str,
    standby: &Arc<std::sync::Mutex<Option<String>>>,
) -> Result<(crate::storage::DaemonLock, bool)> {
    let mut waited = false;
    let waiting = |holder: &str| {
        tracing::info!("standby: waiting for the lease (held by {holder})");
        *standby.lock().unwrap_or_else(|e| e.into_inner()) = Some(holder.to_owned());
        waited = true;
    };
    let (stop_tx, stop) = watch::channel(false);
    let beat = heartbeat(
        bridge.store().clone(),
        instance.to_owned(),
        "standby",
        None,
        stop.clone(),
    );
    // Again every minute: a room may become encrypted, and the homeserver may be down now.
    let warm = async {
        let mut said = false;
        loop {
            let warmed = async {
                bridge.load_portals().await?;
                bridge.refresh_encryption().await
            };
            if let Err(e) = warmed.await
                && !std::mem::replace(&mut said, true)
            {
                tracing::warn!("standby: cannot start the encryption devices yet (trying again every minute): {e}");
            }
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
    };
    // A reload signal (`systemctl reload`) must not end a standby: the file is read again when
    // it takes over.
    #[cfg(unix)]
    let hup = async {
        if let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            while hup.recv().await.is_some() {
                tracing::info!("standby: SIGHUP: the config file is read again when this instance takes over");
            }
        }
        std::future::pending::<()>().await
    };
    #[cfg(not(unix))]
    let hup = std::future::pending::<()>();
    let url = bridge.cfg().database.clone();
    let lease = Store::acquire_lease(&url, instance, bridge.cfg().instance.is_some(), waiting);
    let lock = tokio::select! {
        lock = lease => lock,
        _ = beat => unreachable!("the heartbeat runs until stopped"),
        _ = warm => unreachable!("the warm-up loops"),
        _ = hup => unreachable!("pending"),
    };
    let _ = stop_tx.send(true);
    Ok((lock?, waited))
}

/// PostgreSQL: say every few seconds that this instance is alive, in `role` (`tgmx status`),
/// and, for the active one, note in `standby_around` whether a standby said so lately. SQLite
/// (one daemon, on one host): nothing to say.
async fn heartbeat(
    store: Store,
    instance: String,
    role: &'static str,
    standby_around: Option<Arc<std::sync::atomic::AtomicBool>>,
    mut stop: watch::Receiver<bool>,
) {
    if store.backend() != crate::storage::Backend::Postgres {
        return;
    }
    loop {
        if let Err(e) = store.instance_alive(&instance, role).await {
            tracing::debug!("cannot record this instance as alive: {e}");
        }
        if let Some(flag) = &standby_around
            && let Ok(all) = store.instances().await
        {
            let now = crate::storage::now_ms();
            let seen = all
                .iter()
                .any(|i| i.name != instance && i.role == "standby" && now - i.seen_at <= 3 * Store::HEARTBEAT_MS);
            flag.store(seen, std::sync::atomic::Ordering::Relaxed);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(Store::HEARTBEAT_MS as u64)) => {},
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// PostgreSQL: wake the Matrix lanes when any instance queues events (a standby stores what the
/// homeserver delivered to it); after a lost connection, listen again (and wake: notifications
/// may have been missed). SQLite: nothing to do.
async fn listen_inbox(store: Store, wake: Arc<Notify>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            r = store.listen_inbox(|| wake.notify_one()) => {
                if let Err(e) = r {
                    tracing::warn!("cannot listen for events stored by other instances: {e}; again in 2 s");
                }
                wake.notify_one();
            }
            _ = stop.wait_for(|s| *s) => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {},
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Ask Telegram who the bot is, once at start: a refused token stops the start with an error
/// naming the setting; an unreachable Bot API is logged in one line (host and cause) and the
/// poller keeps trying (`/ready` says so meanwhile).
async fn check_bot_token(tg: &crate::telegram::TelegramSender) -> Result<()> {
    use crate::telegram::TgError;
    match tokio::time::timeout(Duration::from_secs(20), tg.get_me()).await {
        Ok(Ok(me)) => {
            tracing::info!(
                bot = %me.username.as_deref().unwrap_or("?"),
                id = me.id.0,
                "telegram bot token accepted"
            );
            Ok(())
        }
        Ok(Err(TgError::Unauthorized)) => Err(Error::Config(
            "`gateway.telegram.bot_token` (or TGMX_TELEGRAM_TOKEN): Telegram refused the bot token \
             (Unauthorized); copy it again from @BotFather"
                .into(),
        )),
        // Network trouble: the message names the host and the cause.
        Ok(Err(e @ TgError::Failed { transient: true, .. })) => {
            tracing::error!("{e}; the bridge starts and keeps trying");
            Ok(())
        }
        Ok(Err(e)) => {
            tracing::warn!("telegram getMe failed: {e}; the bridge starts and keeps trying");
            Ok(())
        }
        Err(_) => {
            tracing::error!(
                "cannot reach the Telegram Bot API at {}: no answer in 20 s; the bridge starts and keeps trying",
                tg.host()
            );
            Ok(())
        }
    }
}

/// Matrix -> Telegram: a lane per room (see `bridge::lanes`).
async fn run_mx_lanes(bridge: Arc<Bridge>, wake: Arc<Notify>, stop: watch::Receiver<bool>) {
    let b = bridge.clone();
    let lane_stop = stop.clone();
    run_lanes(
        "matrix->telegram",
        wake,
        stop,
        move || {
            let b = b.clone();
            async move { b.store().mx_lanes().await }
        },
        move |lane: Option<ruma::OwnedRoomId>, lane_wake: Arc<Notify>| {
            // The lane of events without a room is ''.
            let room = lane.as_ref().map_or(String::new(), |r| r.to_string());
            let chat = lane.as_deref().and_then(|r| bridge.portals().chat_for_room(r));
            let portal = chat.is_some();
            let span = tracing::info_span!("lane", %room, chat);
            let (b, b2, b3) = (bridge.clone(), bridge.clone(), bridge.clone());
            let again = lane_wake.clone();
            // Rows the handler removed already (with the message's link, in one commit).
            let removed = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
            let removed2 = removed.clone();
            tokio::spawn(
                run_worker(
                    "matrix->telegram",
                    Direction::MxToTg,
                    bridge.store().clone(),
                    lane_wake,
                    lane_stop.clone(),
                    DoneAt::EachItem,
                    !portal,
                    move || {
                        let (b, room, lane, again) = (b.clone(), room.clone(), lane.clone(), again.clone());
                        async move {
                            // Standby (and a rollback's backlog not yet dealt with): a portal's
                            // events wait (`bridge::standby`); other rooms' are handled.
                            if let Some(chat) = chat
                                && b.holds_matrix(chat)
                            {
                                return Ok(Vec::new());
                            }
                            let batch = b.store().next_mx_lane(lane.as_deref()).await?;
                            let fetched = batch.len();
                            let batch = b.catch_up_before(&room, batch).await?;
                            if batch.len() < fetched {
                                again.notify_one(); // cut short: the rest comes next round
                            }
                            Ok(batch)
                        }
                    },
                    move |item| {
                        let (b, removed) = (b2.clone(), removed.clone());
                        async move {
                            if b.handle_mx_item(&item).await? {
                                removed.lock().expect("lock").insert(item.key);
                            }
                            Ok(())
                        }
                    },
                    move |keys: Vec<i64>| {
                        let (b, removed) = (b3.clone(), removed2.clone());
                        async move {
                            for key in keys {
                                if !removed.lock().expect("lock").remove(&key) {
                                    b.store().done_mx_inbox(key).await?;
                                }
                            }
                            Ok(())
                        }
                    },
                )
                .instrument(span),
            )
        },
        |n| crate::metrics::METRICS.lanes(Direction::MxToTg, n),
    )
    .await
}

/// Telegram -> Matrix: a lane per chat (see `bridge::lanes`); a chat whose room is not set up
/// yet waits alone.
async fn run_tg_lanes(bridge: Arc<Bridge>, wake: Arc<Notify>, stop: watch::Receiver<bool>) {
    let b = bridge.clone();
    let lane_stop = stop.clone();
    run_lanes(
        "telegram->matrix",
        wake,
        stop,
        move || {
            let b = b.clone();
            async move { b.store().tg_lanes().await }
        },
        move |chat: Option<i64>, lane_wake: Arc<Notify>| {
            let portal = chat.is_some_and(|c| bridge.chat_is_configured(c));
            let room = chat
                .and_then(|c| bridge.portals().room_for_chat(c))
                .map(|r| r.to_string());
            let span = tracing::info_span!("lane", chat, room);
            let (b, b2, b3) = (bridge.clone(), bridge.clone(), bridge.clone());
            tokio::spawn(
                run_worker(
                    "telegram->matrix",
                    Direction::TgToMx,
                    bridge.store().clone(),
                    lane_wake,
                    lane_stop.clone(),
                    DoneAt::EachBatch,
                    !portal,
                    move || {
                        let b = b.clone();
                        async move {
                            // `gateway.matrix.enabled: false`: nothing is relayed to Matrix. The
                            // updates stay in the inbox (`tgmx status` and `tgmx audit` count
                            // them) and are bridged in order once it is true again (read live).
                            if !b.cfg().gateway.matrix.enabled {
                                return Ok(Vec::new());
                            }
                            // Standby: everything waits for the rollback (`bridge::standby`).
                            if b.holds_telegram(chat) {
                                return Ok(Vec::new());
                            }
                            b.store().next_tg_lane(chat).await
                        }
                    },
                    move |item| {
                        let b = b2.clone();
                        async move { b.handle_tg_update(&item.json).await }
                    },
                    move |keys: Vec<i64>| {
                        let b = b3.clone();
                        async move { b.store().done_tg_inbox(&keys).await }
                    },
                )
                .instrument(span),
            )
        },
        |n| crate::metrics::METRICS.lanes(Direction::TgToMx, n),
    )
    .await
}

/// While database writes fail, try a small write every second: intake stays stopped until one
/// succeeds (see `Store::write_fault`).
async fn probe_storage(store: Store, mut stop: watch::Receiver<bool>) {
    let mut fault = store.watch_write_fault();
    loop {
        // Every 5 s the database file is also checked (deleted or replaced under the daemon).
        tokio::select! {
            r = fault.wait_for(Option::is_some) => if r.is_err() { return },
            _ = tokio::time::sleep(Duration::from_secs(5)) => {
                let _ = store.check_file();
                continue;
            }
            _ = stop.wait_for(|s| *s) => return,
        }
        while store.write_fault().is_some() {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {},
                _ = stop.wait_for(|s| *s) => return,
            }
            let _ = store.probe_write().await;
        }
    }
}

/// Once a burst of messages is over (nothing handled for a few seconds), hand the memory the
/// allocator kept from it back to the system: glibc's malloc keeps freed memory in per-thread
/// arenas. Runs at most once per burst and takes about a millisecond (after 500 new puppets it
/// gave back up to 0.4 MB; see bench/RESULTS.md).
async fn release_memory_after_bursts(mut stop: watch::Receiver<bool>) {
    let mut last = crate::metrics::METRICS.activity();
    let mut busy = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(3)) => {},
            _ = stop.wait_for(|s| *s) => return,
        }
        let now = crate::metrics::METRICS.activity();
        if now != last {
            (last, busy) = (now, true);
        } else if busy {
            busy = false;
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            // SAFETY: malloc_trim only returns free memory of glibc's arenas; it takes no pointers.
            unsafe {
                libc::malloc_trim(0);
            }
        }
    }
}

/// Right after the start, and then every `gateway.matrix.catch_up_secs` (read live; 0: never),
/// queue the Matrix events the homeserver holds or skipped (see `bridge::catch_up`). Until one
/// complete sweep has covered everything sent before the start (whatever was sent while the
/// bridge was down, which Conduit would otherwise deliver only when some later event comes),
/// rooms are read every half second, leaving events younger than 2 s to the homeserver's push.
async fn catch_up_loop(bridge: Arc<Bridge>, wake: Arc<Notify>, mut stop: watch::Receiver<bool>) {
    const START_MIN_AGE_MS: i64 = 2_000;
    let started = crate::storage::now_ms();
    let mut last_prune: Option<std::time::Instant> = None;
    let mut swept_since_start = false;
    loop {
        // Seen event ids are kept a week (the catch-up looks back at most six days).
        if last_prune.is_none_or(|t| t.elapsed() > Duration::from_secs(24 * 3600)) {
            last_prune = Some(std::time::Instant::now());
            match bridge.store().prune_seen(7 * 24 * 3600 * 1000).await {
                Ok(n) if n > 0 => tracing::debug!(n, "forgot old seen event ids"),
                Ok(_) => {}
                Err(e) => tracing::warn!("cannot prune seen event ids: {e}"),
            }
        }
        let every = bridge.cfg().gateway.matrix.catch_up_secs;
        // Rooms already joined are read even while another configured room is not.
        let wait = if every == 0 {
            Duration::from_secs(60)
        } else if !bridge.portals().any() || !swept_since_start {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(every)
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {},
            _ = stop.wait_for(|s| *s) => return,
        }
        if every == 0 || !bridge.portals().any() {
            continue;
        }
        let min_age = if swept_since_start {
            crate::bridge::catch_up::HELD_AFTER_MS
        } else {
            START_MIN_AGE_MS
        };
        let cutoff = crate::storage::now_ms() - min_age;
        match bridge.catch_up_sweep(min_age).await {
            Ok(sweep) => {
                // Read again soon until every room was read and settled up to the start.
                swept_since_start |= sweep.complete && cutoff >= started;
                if sweep.queued > 0 {
                    wake.notify_one();
                }
            }
            Err(e) => tracing::warn!("catch-up sweep failed: {e}"),
        }
    }
}

/// Bot user and rooms: retried until every configured room is joined, again after a reload.
async fn setup_loop(bridge: Arc<Bridge>, mut stop: watch::Receiver<bool>) {
    let mut wait = Duration::from_millis(500);
    loop {
        let done = match bridge.setup().await {
            Ok(pending) => {
                let was = bridge.portals().is_ready();
                bridge.portals().set_ready(pending.is_empty());
                if pending.is_empty() && !was {
                    tracing::info!(
                        rooms = bridge.cfg().rooms.len(),
                        "bridge ready: every configured room is set up"
                    );
                } else if !pending.is_empty() {
                    tracing::info!(?pending, "rooms not set up yet; retrying");
                }
                bridge.wake_announcer();
                if let Err(e) = bridge.refresh_encryption().await {
                    tracing::warn!("cannot read the encryption state of every portal yet: {e}");
                }
                // The group's title, description and photo on portals bridged for the first time.
                bridge.initial_room_details().await;
                // Not part of readiness (nothing is bridged there), but tried again until joined.
                let management = bridge.join_management_room().await;
                pending.is_empty() && management
            }
            Err(e) => {
                tracing::warn!("setup failed (homeserver down?): {e}");
                false
            }
        };
        if done {
            wait = Duration::from_millis(500);
            tokio::select! {
                _ = bridge.portals().setup_woken() => {},
                _ = stop.wait_for(|s| *s) => return,
            }
        } else {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {},
                _ = bridge.portals().setup_woken() => {},
                _ = stop.wait_for(|s| *s) => return,
            }
            wait = (wait * 2).min(Duration::from_secs(30));
        }
    }
}

/// Live reload on SIGHUP and on a change of the file's content. An invalid file is rejected
/// with a log line and the configuration in force stays.
async fn watch_config(bridge: Arc<Bridge>, path: PathBuf, mut stop: watch::Receiver<bool>) {
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).expect("SIGHUP handler");
    let mut last = std::fs::read(&path).ok();
    loop {
        #[cfg(unix)]
        let why = tokio::select! {
            _ = hup.recv() => "SIGHUP",
            _ = tokio::time::sleep(Duration::from_secs(1)) => "file change",
            _ = stop.wait_for(|s| *s) => return,
        };
        #[cfg(not(unix))]
        let why = tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => "file change",
            _ = stop.wait_for(|s| *s) => return,
        };
        let now = std::fs::read(&path).ok();
        if why == "file change" && now == last {
            continue;
        }
        last = now;
        match Config::load(&path) {
            Ok(cfg) => {
                tracing::info!(trigger = why, path = %path.display(), "reloading config");
                crate::metrics::METRICS.reloaded(true);
                if let Err(e) = bridge.reload(cfg).await {
                    tracing::error!("config reload failed: {e}");
                }
            }
            Err(e) => {
                crate::metrics::METRICS.reloaded(false);
                tracing::error!(
                    trigger = why,
                    "config reload rejected, the previous configuration stays in force: {e}"
                );
            }
        }
    }
}
