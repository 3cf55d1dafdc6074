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
        // Nothing more is fetched (and so confirmed) while updates could not be saved.
        if store.write_fault().is_some() && !store.until_writable(&mut shutdown).await {
            return;
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
                    .map(|u| (u.id.0 as i64, storable(u).to_string()))
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
                        retry_after: Some(d), ..
                    } => *d,
                    _ => backoff,
                };
                if e.to_string().contains("Conflict") {
                    tracing::error!("telegram getUpdates conflict: another poller uses this bot token ({e})");
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

/// An update as JSON that deserialises back to the same update. teloxide 0.13 serialises the
/// actor of a `message_reaction` flattened into the object, which its own deserialiser cannot
/// read; put it back under `user` / `actor_chat` as the Bot API sends it.
pub fn storable(u: &teloxide::types::Update) -> serde_json::Value {
    use teloxide::types::{MaybeAnonymousUser, UpdateKind};
    let mut v = serde_json::to_value(u).expect("update serialises");
    if let UpdateKind::MessageReaction(r) = &u.kind {
        let (key, actor) = match &r.actor {
            MaybeAnonymousUser::User(user) => ("user", serde_json::to_value(user)),
            MaybeAnonymousUser::Chat(chat) => ("actor_chat", serde_json::to_value(chat)),
        };
        if let (Some(obj), Ok(actor)) = (v.get_mut("message_reaction").and_then(|r| r.as_object_mut()), actor) {
            if let Some(fields) = actor.as_object() {
                for k in fields.keys() {
                    obj.remove(k);
                }
            }
            // `message_id` belongs to the reaction, not the actor.
            obj.insert("message_id".into(), serde_json::json!(r.message_id.0));
            obj.insert(key.into(), actor);
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use teloxide::types::{Update, UpdateKind};

    #[test]
    fn stored_updates_read_back_the_same() {
        let raw = serde_json::json!({"update_id": 7, "message_reaction": {
            "chat": {"id": -100, "type": "supergroup", "title": "ops"}, "message_id": 3,
            "user": {"id": 42, "is_bot": false, "first_name": "Moss"}, "date": 1700000000,
            "old_reaction": [], "new_reaction": [{"type": "emoji", "emoji": "👍"}]}});
        // Parsed from text, as both getUpdates answers and stored rows are.
        let u: Update = serde_json::from_str(&raw.to_string()).unwrap();
        assert!(matches!(u.kind, UpdateKind::MessageReaction(_)), "{:?}", u.kind);
        let back: Update = serde_json::from_str(&super::storable(&u).to_string()).unwrap();
        assert_eq!(back, u);
        let UpdateKind::MessageReaction(r) = back.kind else {
            panic!("kind: {:?}", back.kind)
        };
        assert_eq!(
            (r.chat.id.0, r.message_id.0, r.user().map(|u| u.id.0)),
            (-100, 3, Some(42))
        );
        let raw = serde_json::json!({"update_id": 8, "message": {"message_id": 1, "date": 1700000000,
            "chat": {"id": -100, "type": "supergroup", "title": "ops"},
            "from": {"id": 42, "is_bot": false, "first_name": "Moss"}, "text": "hi"}});
        let u: Update = serde_json::from_str(&raw.to_string()).unwrap();
        assert_eq!(
            serde_json::from_str::<Update>(&super::storable(&u).to_string()).unwrap(),
            u
        );
    }
}
