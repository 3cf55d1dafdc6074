//! Long polling (`getUpdates`) into the durable Telegram inbox.
//!
//! The offset confirmed to Telegram is always the one stored in SQLite *after* the updates were
//! stored, so an update is never confirmed before it is safe on disk. Telegram keeps unconfirmed
//! updates for 24 hours, which is what makes a crash, a restart or a standby period lossless.
//! While the database refuses writes, nothing is fetched (and so nothing confirmed).
//!
//! Updates are stored as Telegram sent them and read leniently when bridged
//! ([`crate::telegram::update`]): one update that does not parse cannot hold up the others.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use teloxide::types::AllowedUpdate;
use tokio::sync::{Notify, watch};

use crate::error::{Error, capped};
use crate::storage::{Store, TgUpdate};

/// Largest `getUpdates` answer read. Telegram's are far smaller (at most 100 updates of a few KB
/// each); a larger one is asked for again in fewer updates.
pub const MAX_BODY: usize = 16 << 20;
const MAX_LIMIT: u8 = 100;

/// Update kinds the bridge asks for.
pub fn allowed_updates() -> Vec<AllowedUpdate> {
    vec![
        AllowedUpdate::Message,
        AllowedUpdate::EditedMessage,
        AllowedUpdate::MessageReaction,
    ]
}

/// Poll while `reading` is true: in every mode, standby included (what is read waits in the
/// inbox for the rollback), unless Telegram is disabled (`gateway.telegram.enabled: false`); then
/// no request at all is made, and updates wait on Telegram's side, for 24 hours only.
pub async fn run(
    tg: Arc<super::TelegramSender>,
    store: Store,
    wake: Arc<Notify>,
    timeout_secs: u32,
    mut reading: watch::Receiver<bool>,
    reach: Arc<watch::Sender<Option<String>>>,
    mut shutdown: watch::Receiver<bool>,
) {
    // A webhook and getUpdates exclude each other; the bridge polls.
    if let Err(e) = tg.delete_webhook().await {
        tracing::warn!("deleteWebhook failed: {e}");
    }
    let mut backoff = Duration::from_millis(500);
    let mut limit = MAX_LIMIT;
    loop {
        if *shutdown.borrow() {
            return;
        }
        if !*reading.borrow_and_update() {
            tracing::info!("telegram disabled: not reading it (telegram keeps unread updates for 24 hours)");
            tokio::select! {
                _ = reading.wait_for(|r| *r) => {},
                _ = shutdown.changed() => return,
            }
            tracing::info!("reading telegram again");
            continue;
        }
        if crate::failpoint::fire("poller-panic") {
            panic!("failpoint poller-panic");
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
        let res = tokio::select! {
            r = get_updates(tg.bot(), offset, limit, timeout_secs) => r,
            _ = reading.changed() => continue,
            _ = shutdown.changed() => return,
        };
        if let Err(Poll::Unreachable(why)) = &res {
            reach.send_if_modified(|r| {
                if r.is_none() {
                    tracing::error!("{why}; retrying");
                }
                let changed = r.as_deref() != Some(why.as_str());
                *r = Some(why.clone());
                changed
            });
        } else {
            reach.send_if_modified(|r| {
                if r.take().is_some() {
                    tracing::info!("telegram reached again");
                    return true;
                }
                false
            });
        }
        let e = match res {
            Ok(updates) => {
                backoff = Duration::from_millis(500);
                limit = MAX_LIMIT;
                if updates.is_empty() {
                    continue;
                }
                let mut rows = Vec::with_capacity(updates.len());
                for u in updates {
                    match u.get("update_id").and_then(Value::as_i64) {
                        Some(id) => rows.push(TgUpdate {
                            update_id: id,
                            chat_id: chat_of(&u),
                            json: u.to_string(),
                        }),
                        None => tracing::error!(
                            "telegram sent an update without update_id; it cannot be confirmed or bridged: {}",
                            capped(&u.to_string(), 300)
                        ),
                    }
                }
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
                continue;
            }
            Err(Poll::TooLarge) if limit > 1 => {
                limit = (limit / 2).max(1);
                tracing::warn!(
                    "getUpdates answer over {} MB; asking for {limit} update(s) at a time",
                    MAX_BODY >> 20
                );
                continue;
            }
            Err(Poll::TooLarge) => Error::Telegram {
                message: format!("one update is larger than {} MB; it is not fetched", MAX_BODY >> 20),
                transient: true,
                retry_after: None,
                no_effect: true,
            },
            Err(Poll::Failed(e)) => e,
            Err(Poll::Unreachable(why)) => Error::Telegram {
                message: why,
                transient: true,
                retry_after: None,
                no_effect: true,
            },
        };
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

/// The chat an update belongs to (its lane), if it names one.
pub fn chat_of(update: &Value) -> Option<i64> {
    let obj = update.as_object()?;
    obj.iter()
        .filter(|(k, _)| *k != "update_id")
        .find_map(|(_, v)| v.get("chat").and_then(|c| c.get("id")).and_then(Value::as_i64))
}

enum Poll {
    /// The answer was larger than [`MAX_BODY`].
    TooLarge,
    /// The Bot API could not be reached (one line naming the host and the cause).
    Unreachable(String),
    Failed(Error),
}

/// `getUpdates` with the updates left as JSON. teloxide would parse the whole answer: an update
/// it cannot read would fail the batch (and every later update with it) or become an error kind
/// and be lost. The answer is read up to [`MAX_BODY`].
async fn get_updates(bot: &teloxide::Bot, offset: i64, limit: u8, timeout: u32) -> Result<Vec<Value>, Poll> {
    let mut url = bot.api_url();
    url.path_segments_mut()
        .map_err(|()| Poll::Failed(net_error("the Bot API URL cannot take a path".into())))?
        .push(&format!("bot{}", bot.token()))
        .push("getUpdates");
    let body = serde_json::json!({
        "offset": offset.clamp(0, i32::MAX as i64),
        "limit": limit,
        "timeout": timeout,
        "allowed_updates": allowed_updates(),
    });
    // The URL holds the token: never part of a message.
    let host = url.host_str().unwrap_or("?").to_owned();
    let net = |e: reqwest::Error| {
        let e = e.without_url();
        if e.is_connect() || e.is_timeout() {
            Poll::Unreachable(super::unreachable_reason(&host, &e))
        } else {
            Poll::Failed(net_error(e.to_string()))
        }
    };
    let mut resp = bot.client().post(url).json(&body).send().await.map_err(net)?;
    let status = resp.status();
    let mut bytes = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(net)? {
        if bytes.len() + chunk.len() > MAX_BODY {
            return Err(Poll::TooLarge);
        }
        bytes.extend_from_slice(&chunk);
    }
    let api_error = |message: String, transient: bool, retry_after: Option<Duration>| {
        Poll::Failed(Error::Telegram {
            message,
            transient,
            retry_after,
            no_effect: true,
        })
    };
    let Ok(answer) = serde_json::from_slice::<Value>(&bytes) else {
        let text = String::from_utf8_lossy(&bytes);
        return Err(api_error(
            format!("HTTP {status}, not a Bot API answer: {}", capped(&text, 200)),
            true,
            None,
        ));
    };
    if answer["ok"] == true {
        return match answer.get("result") {
            Some(Value::Array(updates)) => Ok(updates.clone()),
            _ => Err(api_error(
                "getUpdates answered without a list of updates".into(),
                true,
                None,
            )),
        };
    }
    let code = answer["error_code"].as_u64().unwrap_or_else(|| status.as_u16().into());
    let retry_after = answer["parameters"]["retry_after"].as_u64().map(Duration::from_secs);
    let description = answer["description"].as_str().unwrap_or("(no description)");
    Err(api_error(
        format!("{code}: {}", capped(description, 300)),
        code == 429 || code >= 500 || retry_after.is_some(),
        retry_after,
    ))
}

fn net_error(message: String) -> Error {
    Error::Telegram {
        message: crate::error::redact_bot_token(&message),
        transient: true,
        retry_after: None,
        no_effect: false,
    }
}
