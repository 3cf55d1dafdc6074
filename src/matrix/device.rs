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
//! device's to-device messages, and the room keys must reach the encrypting client.

use reqwest::Method;
use ruma::{OwnedUserId, UserId};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::error::{Error, Result};
use crate::matrix::client::MatrixClient;
use crate::storage::Store;

/// What a device of the bridge is for: each purpose has a device of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// The user's device in encrypted rooms (matrix-sdk's client and crypto store).
    Encryption,
    /// Reading timelines and following rooms with `/sync`.
    Reader,
}

impl Purpose {
    /// Its row in `e2ee_devices` (keyed by user id; the reader's key carries a suffix).
    fn key(self, user: &UserId) -> String {
        match self {
            Purpose::Encryption => user.to_string(),
            Purpose::Reader => format!("{user}#reader"),
        }
    }

    /// Shown in device lists (Element's session list).
    fn display_name(self) -> &'static str {
        match self {
            Purpose::Encryption => "tgmx bridge",
            Purpose::Reader => "tgmx bridge (reader)",
        }
    }
}

/// The device of `user` for `purpose`: the stored one, or a new one (logged in and stored).
/// Returns (device id, access token).
pub async fn stored_or_login(
    mx: &MatrixClient,
    store: &Store,
    user: &UserId,
    purpose: Purpose,
) -> Result<(String, String)> {
    if let Some(d) = store.e2ee_device(&purpose.key(user)).await? {
        return Ok(d);
    }
    login(mx, store, user, purpose).await
}

/// Log `user` in with `m.login.application_service` and store the new device.
async fn login(mx: &MatrixClient, store: &Store, user: &UserId, purpose: Purpose) -> Result<(String, String)> {
    let v = mx
        .request_as_appservice(
            Method::POST,
            "/_matrix/client/v3/login",
            Some(&json!({
                "type": "m.login.application_service",
                "identifier": {"type": "m.id.user", "user": user.as_str()},
                "initial_device_display_name": purpose.display_name(),
            })),
        )
        .await?;
    let (Some(device), Some(token)) = (v["device_id"].as_str(), v["access_token"].as_str()) else {
        return Err(Error::MatrixTransport(
            "login answered without a device or token".into(),
        ));
    };
    store.save_e2ee_device(&purpose.key(user), device, token).await?;
    tracing::info!(%user, device, ?purpose, "device created");
    Ok((device.to_owned(), token.to_owned()))
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

    /// `GET path` as the device. A token the homeserver no longer knows (its database was
    /// reset, or the device was deleted) is replaced by a new login once.
    pub async fn get(&self, path: &str) -> Result<Value> {
        let current = {
            // Held only while the token is looked up: a long-polling `/sync` must not hold up
            // the catch-up's reads.
            let mut token = self.token.lock().await;
            if token.is_none() {
                *token = Some(
                    stored_or_login(&self.mx, &self.store, &self.user, Purpose::Reader)
                        .await?
                        .1,
                );
            }
            token.clone().unwrap_or_default()
        };
        match self.mx.request_with_token(&current, Method::GET, path).await {
            Err(Error::Matrix { status: 401, .. }) => {
                let fresh = {
                    let mut token = self.token.lock().await;
                    if token.as_deref() == Some(current.as_str()) {
                        tracing::warn!(user = %self.user, "the homeserver no longer knows the bridge's device; logging in again");
                        *token = Some(login(&self.mx, &self.store, &self.user, Purpose::Reader).await?.1);
                    }
                    token.clone().unwrap_or_default()
                };
                self.mx.request_with_token(&fresh, Method::GET, path).await
            }
            other => other,
        }
    }

    /// Up to `limit` events of `room` before `from` (a pagination token; `None`: the end),
    /// newest first, and the token for the page before them (`None` at the room's start).
    pub async fn messages_back(
        &self,
        room: &ruma::RoomId,
        from: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<Value>, Option<String>)> {
        let mut path = format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit={limit}",
            crate::matrix::client::seg(room.as_str())
        );
        if let Some(from) = from {
            path.push_str("&from=");
            path.push_str(&crate::matrix::client::seg(from));
        }
        let mut v = self.get(&path).await?;
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
        });
        let mut path = format!(
            "/_matrix/client/v3/sync?timeout={}&filter={}",
            if since.is_some() { timeout_ms } else { 0 },
            crate::matrix::client::seg(&filter.to_string())
        );
        if let Some(since) = since {
            path.push_str("&since=");
            path.push_str(&crate::matrix::client::seg(since));
        }
        self.get(&path).await
    }

    /// Up to `limit` events before `event` in `room`, oldest first (`/context`).
    pub async fn events_before(&self, room: &ruma::RoomId, event: &str, limit: u32) -> Result<Vec<Value>> {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/context/{}?limit={limit}",
            crate::matrix::client::seg(room.as_str()),
            crate::matrix::client::seg(event)
        );
        let mut v = self.get(&path).await?;
        let mut before = match v["events_before"].take() {
            Value::Array(events) => events,
            _ => Vec::new(),
        };
        before.reverse();
        Ok(before)
    }
}
