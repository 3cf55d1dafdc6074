//! Devices of the bridge's own users, and reading a room's timeline as a device of the bot.
//!
//! A user in the appservice namespace gets a device by logging in once with
//! `m.login.application_service`; the device id and access token are kept in `e2ee_devices`, so
//! a restart reuses the same device (encrypted rooms need that: nobody verifies it again).
//!
//! Timeline reads (`/messages`, `/context`, `/sync`) go through a device of the bot, not through
//! the appservice token: Conduit panics (500) on those endpoints for an appservice request that
//! names no device, and an appservice request is not a device on any server. It is a device of
//! its own ("tgmx bridge (reader)"), not the one the encryption code uses: a `/sync` consumes the
//! device's to-device messages, and the room keys must reach the encrypting client. The requests
//! are [`MatrixClient`]'s (its endpoints and path encoder), sent with the device's token.

use ruma::{EventId, OwnedUserId, RoomId, UserId};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::error::{Error, Result};
use crate::matrix::client::{MatrixClient, endpoint, path};
use crate::storage::{E2eeDevice, Store};

/// What a device of the bridge is for: each purpose has a device of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose<'a> {
    /// The user's device in encrypted rooms (matrix-sdk's client and crypto store); with the
    /// name of the instance of an active/standby pair whose device it is (each has its own
    /// crypto store), or `None` for a single daemon.
    Encryption(Option<&'a str>),
    /// Reading timelines and following rooms with `/sync`.
    Reader,
}

impl Purpose<'_> {
    /// Its row in `e2ee_devices` (keyed by user id; the reader's key and an instance's carry a
    /// suffix).
    fn key(self, user: &UserId) -> String {
        match self {
            Purpose::Encryption(None) => user.to_string(),
            Purpose::Encryption(Some(name)) => format!("{user}@{name}"),
            Purpose::Reader => format!("{user}#reader"),
        }
    }

    /// Shown in device lists (Element's session list).
    fn display_name(self) -> &'static str {
        match self {
            Purpose::Encryption(_) => "tgmx bridge",
            Purpose::Reader => "tgmx bridge (reader)",
        }
    }
}

/// The device of `user` for `purpose`: the stored one, or a new one (logged in and stored).
pub async fn stored_or_login(
    mx: &MatrixClient,
    store: &Store,
    user: &UserId,
    purpose: Purpose<'_>,
) -> Result<E2eeDevice> {
    if let Some(d) = store.e2ee_device(&purpose.key(user)).await? {
        return Ok(d);
    }
    login(mx, store, user, purpose).await
}

/// Log `user` in with `m.login.application_service` and store the new device.
async fn login(mx: &MatrixClient, store: &Store, user: &UserId, purpose: Purpose<'_>) -> Result<E2eeDevice> {
    let (device_id, access_token) = mx.login_appservice(user, purpose.display_name()).await?;
    store
        .save_e2ee_device(&purpose.key(user), &device_id, &access_token)
        .await?;
    tracing::info!(%user, device = %device_id, ?purpose, "device created");
    Ok(E2eeDevice {
        device_id,
        access_token,
    })
}

/// Reads room timelines as the reader device of one user (the bot), logging in on first use.
pub struct TimelineReader {
    mx: MatrixClient,
    store: Store,
    user: OwnedUserId,
    /// The device's access token once known; never logged.
    token: Mutex<Option<String>>,
}

impl TimelineReader {
    pub fn new(mx: MatrixClient, store: Store, user: OwnedUserId) -> TimelineReader {
        TimelineReader {
            mx,
            store,
            user,
            token: Mutex::default(),
        }
    }

    /// The database the device's token is kept in.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// `GET path?query` as the device. A token the homeserver no longer knows (its database was
    /// reset, or the device was deleted) is replaced by a new login once.
    async fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Value> {
        let current = {
            // Held only while the token is looked up: a long-polling `/sync` must not hold up
            // the catch-up's reads.
            let mut token = self.token.lock().await;
            if token.is_none() {
                *token = Some(
                    stored_or_login(&self.mx, &self.store, &self.user, Purpose::Reader)
                        .await?
                        .access_token,
                );
            }
            token.clone().unwrap_or_default()
        };
        match self.mx.get_with_token(&current, path, query).await {
            Err(Error::Matrix { status: 401, .. }) => {
                let fresh = {
                    let mut token = self.token.lock().await;
                    if token.as_deref() == Some(current.as_str()) {
                        tracing::warn!(user = %self.user, "the homeserver no longer knows the bridge's device; logging in again");
                        *token = Some(
                            login(&self.mx, &self.store, &self.user, Purpose::Reader)
                                .await?
                                .access_token,
                        );
                    }
                    token.clone().unwrap_or_default()
                };
                self.mx.get_with_token(&fresh, path, query).await
            }
            other => other,
        }
    }

    /// Up to `limit` events of `room` before `from` (a pagination token; `None`: the end),
    /// newest first, and the token for the page before them (`None` at the room's start).
    pub async fn messages_back(
        &self,
        room: &RoomId,
        from: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<Value>, Option<String>)> {
        let limit = limit.to_string();
        let mut query = vec![("dir", "b"), ("limit", limit.as_str())];
        if let Some(from) = from {
            query.push(("from", from));
        }
        let mut v = self.get(&path(&endpoint::MESSAGES, &[&room]), &query).await?;
        let chunk = match v["chunk"].take() {
            Value::Array(events) => events,
            _ => Vec::new(),
        };
        let end = v["end"].as_str().filter(|_| !chunk.is_empty()).map(str::to_owned);
        Ok((chunk, end))
    }

    /// One `/sync` as the device: long-polls up to `timeout_ms` from `since` (`None`: an initial
    /// sync, which answers at once with the latest events of each room). Timelines carry only
    /// `types`, up to 100 events a room; no presence, account data, receipts or typing.
    pub async fn sync(&self, since: Option<&str>, timeout_ms: u64, types: &[&str]) -> Result<Value> {
        let limit = 100;
        let filter = json!({
            "presence": {"types": []},
            "account_data": {"types": []},
            "room": {
                "ephemeral": {"types": []},
                "account_data": {"types": []},
                "state": {"lazy_load_members": true},
                "timeline": {"limit": limit, "types": types},
            },
        })
        .to_string();
        let timeout = if since.is_some() { timeout_ms } else { 0 }.to_string();
        let mut query = vec![("timeout", timeout.as_str()), ("filter", filter.as_str())];
        if let Some(since) = since {
            query.push(("since", since));
        }
        self.get(&path(&endpoint::SYNC, &[]), &query).await
    }

    /// One event of `room` as the reader device sees it (`/context` without neighbours; an
    /// encrypted event stays encrypted).
    pub async fn event(&self, room: &RoomId, event: &EventId) -> Result<Value> {
        let mut v = self
            .get(&path(&endpoint::CONTEXT, &[&room, &event]), &[("limit", "0")])
            .await?;
        Ok(v["event"].take())
    }

    /// Up to `limit` events before `event` in `room`, oldest first (`/context`).
    pub async fn events_before(&self, room: &RoomId, event: &EventId, limit: u32) -> Result<Vec<Value>> {
        let limit = limit.to_string();
        let mut v = self
            .get(
                &path(&endpoint::CONTEXT, &[&room, &event]),
                &[("limit", limit.as_str())],
            )
            .await?;
        let mut before = match v["events_before"].take() {
            Value::Array(events) => events,
            _ => Vec::new(),
        };
        before.reverse();
        Ok(before)
    }
}
