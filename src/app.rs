//! Wiring: `App::build(config)` binds the appservice port and opens the database;
//! `run_until_stopped(shutdown)` runs the HTTP server, the Telegram poller and the two bridge
//! workers until `shutdown` resolves, then stops them in order.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use teloxide::Bot;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};

use crate::bridge::{run_worker, Bridge};
use crate::config::{Config, Registration};
use crate::error::{Error, Result};
use crate::matrix::appservice::{router, AsState};
use crate::matrix::client::MatrixClient;
use crate::storage::{Direction, Store};

pub struct App {
    listener: TcpListener,
    bridge: Arc<Bridge>,
    registration: Registration,
}

impl App {
    pub async fn build(cfg: Config) -> Result<App> {
        let registration = Registration::load(&cfg.appservice.registration)?;
        let store = Store::open(&cfg.database).await?;
        let mx = MatrixClient::new(&cfg.homeserver.url, &registration.as_token);
        let api_url = url::Url::parse(&cfg.gateway.telegram.api_url)
            .map_err(|e| Error::Config(format!("`gateway.telegram.api_url`: {e}")))?;
        let token = if cfg.gateway.telegram.enabled { cfg.telegram_token()?.to_owned() } else { String::new() };
        let tg = Bot::new(token).set_api_url(api_url);
        let listener = TcpListener::bind(cfg.appservice.listen)
            .await
            .map_err(|e| Error::Config(format!("`appservice.listen`: cannot bind {}: {e}", cfg.appservice.listen)))?;
        let bridge = Arc::new(Bridge::new(cfg, store, mx, tg));
        Ok(App { listener, bridge, registration })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or_default()
    }

    pub fn bridge(&self) -> &Arc<Bridge> {
        &self.bridge
    }

    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let App { listener, bridge, registration } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let mx_wake = Arc::new(Notify::new());
        let tg_wake = Arc::new(Notify::new());

        let user_bridge = bridge.clone();
        let state = AsState {
            store: bridge.store.clone(),
            hs_token: registration.hs_token.as_str().into(),
            wake: mx_wake.clone(),
            user_exists: Arc::new(move |user: &str| {
                let b = user_bridge.clone();
                let user = user.to_owned();
                Box::pin(async move {
                    if user == b.bot_mxid.as_str() {
                        return true;
                    }
                    let Some(id) = user
                        .strip_prefix('@')
                        .and_then(|u| u.strip_prefix(b.cfg.appservice.puppet_prefix.as_str()))
                        .and_then(|u| u.split(':').next())
                        .and_then(|id| id.parse::<i64>().ok())
                    else {
                        return false;
                    };
                    b.is_bridge_user(&user) && matches!(b.store.puppet(id).await, Ok(Some(_)))
                })
            }),
        };
        tracing::info!(addr = %listener.local_addr()?, "appservice listening");
        let mut http_stop = stop_rx.clone();
        let http = tokio::spawn(async move {
            axum::serve(listener, router(state))
                .with_graceful_shutdown(async move {
                    let _ = http_stop.wait_for(|s| *s).await;
                })
                .await
        });

        // Bot user and rooms: retried until every configured room is joined.
        let setup_bridge = bridge.clone();
        let mut setup_stop = stop_rx.clone();
        let setup = tokio::spawn(async move {
            let mut wait = Duration::from_millis(500);
            loop {
                match setup_bridge.setup().await {
                    Ok(pending) if pending.is_empty() => return,
                    Ok(_) => {}
                    Err(e) => tracing::warn!("setup failed (homeserver down?): {e}"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {},
                    _ = setup_stop.wait_for(|s| *s) => return,
                }
                wait = (wait * 2).min(Duration::from_secs(30));
            }
        });

        let mut tasks = vec![setup];
        let tg_cfg = &bridge.cfg.gateway.telegram;
        if tg_cfg.enabled {
            tasks.push(tokio::spawn(crate::telegram::poller::run(
                bridge.tg.clone(),
                bridge.store.clone(),
                tg_wake.clone(),
                tg_cfg.poll_timeout,
                stop_rx.clone(),
            )));
        }
        let b = bridge.clone();
        let b2 = bridge.clone();
        let b3 = bridge.clone();
        tasks.push(tokio::spawn(run_worker(
            "telegram->matrix",
            Direction::TgToMx,
            bridge.store.clone(),
            tg_wake,
            stop_rx.clone(),
            move || {
                let b = b.clone();
                async move { b.store.next_tg_inbox(64).await }
            },
            move |item| {
                let b = b2.clone();
                async move { b.handle_tg_update(&item.json).await }
            },
            move |key| {
                let b = b3.clone();
                async move { b.store.done_tg_inbox(key).await }
            },
        )));
        let (b, b2, b3) = (bridge.clone(), bridge.clone(), bridge.clone());
        tasks.push(tokio::spawn(run_worker(
            "matrix->telegram",
            Direction::MxToTg,
            bridge.store.clone(),
            mx_wake,
            stop_rx.clone(),
            move || {
                let b = b.clone();
                async move { b.store.next_mx_inbox(64).await }
            },
            move |item| {
                let b = b2.clone();
                async move { b.handle_mx_event(&item.json).await }
            },
            move |key| {
                let b = b3.clone();
                async move { b.store.done_mx_inbox(key).await }
            },
        )));

        shutdown.await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        match tokio::time::timeout(Duration::from_secs(10), http).await {
            Ok(Ok(Err(e))) => Err(Error::Io(e)),
            _ => Ok(()),
        }
    }
}
