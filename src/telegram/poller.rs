//! Long polling (`getUpdates`) into the durable Telegram inbox.
//!
//! The offset confirmed to Telegram is always the one stored in SQLite *after* the updates were
//! stored, so an update is never confirmed before it is safe on disk. Telegram keeps unconfirmed
//! updates for 24 hours, which is what makes a crash, a restart or a standby period lossless.

use std::sync::Arc;
use std::time::Duration;

use teloxide::prelude::*;
use teloxide::types::AllowedUpdate;
use tokio::sync::{Notify, watch};

use crate::bridge::cutover::Mode;
use crate::error::Error;
use crate::storage::Store;

/// Update kinds the bridge asks for.
pub fn allowed_updates() -> Vec<AllowedUpdate> {
    vec![
        AllowedUpdate::Message,
        AllowedUpdate::EditedMessage,
        AllowedUpdate::MessageReaction,
    ]
}

/// Poll while the mode reads Telegram; in standby, make no request at all (updates wait on
/// Telegram's side for 24 hours and are fetched on rollback).
pub async fn run(
    bot: Bot,
    store: Store,
    wake: Arc<Notify>,
    timeout_secs: u32,
    mut mode: watch::Receiver<Mode>,
    mut shutdown: watch::Receiver<bool>,
) {
    // A webhook and getUpdates exclude each other; the bridge polls.
    if let Err(e) = bot.delete_webhook().await {
        tracing::warn!("deleteWebhook failed: {}", Error::from(e));
    }
    let mut backoff = Duration::from_millis(500);
    loop {
        if *shutdown.borrow() {
            return;
        }
        if !mode.borrow_and_update().reads_telegram() {
            tracing::info!("standby: not reading telegram");
            tokio::select! {
                _ = mode.wait_for(|m| m.reads_telegram()) => {},
                _ = shutdown.changed() => return,
            }
            tracing::info!("reading telegram again");
            continue;
        }
        let offset = match store.tg_offset().await {
            Ok(o) => o,
            Err(e) => {
                tracing::error!("cannot read telegram offset: {e}");
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        let req = bot
            .get_updates()
            .offset(offset.clamp(0, i32::MAX as i64) as i32)
            .timeout(timeout_secs)
            .allowed_updates(allowed_updates());
        let res = tokio::select! {
            r = req.send() => r,
            _ = mode.changed() => continue,
            _ = shutdown.changed() => return,
        };
        match res {
            Ok(updates) => {
                backoff = Duration::from_millis(500);
                if updates.is_empty() {
                    continue;
                }
                let rows: Vec<(i64, String)> = updates
                    .iter()
                    .map(|u| {
                        (
                            u.id.0 as i64,
                            serde_json::to_string(u).expect("update serialises"),
                        )
                    })
                    .collect();
                match store.accept_updates(&rows).await {
                    Ok(()) => {
                        tracing::debug!(count = rows.len(), "telegram updates stored");
                        wake.notify_one();
                    }
                    Err(e) => {
                        // Not stored: the offset did not move, Telegram resends them.
                        tracing::error!("cannot store telegram updates: {e}");
                        tokio::time::sleep(backoff).await;
                    }
                }
            }
            Err(e) => {
                let e = Error::from(e);
                let wait = match &e {
                    Error::Telegram {
                        retry_after: Some(d),
                        ..
                    } => *d,
                    _ => backoff,
                };
                if e.to_string().contains("Conflict") {
                    tracing::error!(
                        "telegram getUpdates conflict: another poller uses this bot token ({e})"
                    );
                } else {
                    tracing::warn!("telegram getUpdates failed: {e}; retrying in {wait:?}");
                }
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {},
                    _ = shutdown.changed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}
