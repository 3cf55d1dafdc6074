//! End-to-end encryption: one real device per acting user.
//!
//! Appservices get no to-device events and no device lists from Conduit (and Synapse gives them
//! only behind MSC3202), so the bridge does what a person's client does. The bot and each puppet
//! that acts in an encrypted room log in once with `m.login.application_service` (a device and a
//! token, kept in `e2ee_devices`) and run a matrix-sdk [`Client`] with its own SQLite crypto store
//! (`tgmx-crypto/<user>/`, encrypted with the pickle key) and a sync loop. The sync loop is what
//! brings room keys (to-device) and device lists.
//!
//! - Incoming `m.room.encrypted` events still arrive in appservice transactions (stored, ordered,
//!   exactly as plain ones); the lane asks the **bot's** client to decrypt them.
//! - Outgoing events are encrypted by the **sending puppet's** client, so the sender and the
//!   device that encrypted agree (receivers flag a mismatch). Files are encrypted by that client
//!   too (`file` instead of `url`).
//! - Clients are created lazily (the bot's as soon as a bridged room is encrypted, so senders
//!   share their keys with it) and live until shutdown. A restart reuses the stored device and
//!   crypto store: no new device, nothing to verify again.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use matrix_sdk::authentication::matrix::MatrixSession;
use matrix_sdk::config::SyncSettings;
use matrix_sdk::deserialized_responses::TimelineEventKind;
use matrix_sdk::media::{MediaFormat, MediaRequestParameters};
use matrix_sdk::ruma::events::room::MediaSource;
use matrix_sdk::ruma::serde::Raw;
use matrix_sdk::ruma::{RoomId, TransactionId, UserId};
use matrix_sdk::store::RoomLoadSettings;
use matrix_sdk::{Client, Room, SessionMeta, SessionTokens};
use ruma::{OwnedEventId, OwnedUserId};
use serde_json::Value;
use tokio::sync::{Mutex, watch};

use crate::error::{Error, Result};
use crate::matrix::client::MatrixClient;
use crate::storage::Store;

pub use super::crypto_files::{backup_dir, dir_for};

/// Devices and crypto stores of the bridge's users.
pub struct Crypto {
    hs_url: String,
    /// The appservice's own client: logs users in (`m.login.application_service`).
    mx: MatrixClient,
    store: Store,
    /// `tgmx-crypto/` beside the database.
    dir: PathBuf,
    /// Encrypts the crypto stores at rest; never logged.
    pickle_key: Option<String>,
    /// One client per user, created on first use; the lock also serialises creation.
    clients: Mutex<HashMap<OwnedUserId, Client>>,
    /// Stops the sync loops ([`Crypto::shutdown`]).
    stop: watch::Sender<bool>,
    /// `instance` of an active/standby pair: each instance has devices (and crypto stores) of its
    /// own, since a crypto store cannot be shared between hosts.
    instance: Option<String>,
}

/// The result of decrypting one event.
pub enum Decrypted {
    /// The cleartext event (with `room_id`).
    Event(Value),
    /// The keys are not here (yet): the reason, as matrix-sdk states it.
    Undecryptable(String),
}

impl Crypto {
    pub fn new(hs_url: &str, mx: MatrixClient, store: Store, dir: PathBuf, pickle_key: Option<String>) -> Crypto {
        Crypto {
            hs_url: hs_url.to_owned(),
            mx,
            store,
            dir,
            pickle_key,
            clients: Mutex::default(),
            stop: watch::Sender::new(false),
            instance: None,
        }
    }

    /// The devices of instance `name` (config `instance`), not the ones of a single daemon.
    pub fn for_instance(mut self, name: Option<String>) -> Crypto {
        self.instance = name;
        self
    }

    /// Stop every sync loop (at shutdown).
    pub fn shutdown(&self) {
        self.stop.send_replace(true);
    }

    /// Whether this build can take part in encrypted rooms.
    pub const AVAILABLE: bool = true;

    /// Make sure `user`'s device exists and syncs (the bot's, as soon as a room is encrypted,
    /// so that senders share their room keys with it).
    pub async fn ensure_device(&self, user: &UserId) -> Result<()> {
        self.client(user).await.map(|_| ())
    }

    /// The client of `user`, logging in and starting its sync loop on first use.
    async fn client(&self, user: &UserId) -> Result<Client> {
        let mut clients = self.clients.lock().await;
        if let Some(c) = clients.get(user) {
            return Ok(c.clone());
        }
        let Some(pickle_key) = self.pickle_key.as_deref() else {
            return Err(Error::Config(
                "a bridged room is encrypted: set `encryption.pickle_key` or TGMX_PICKLE_KEY".into(),
            ));
        };
        let device = crate::matrix::device::stored_or_login(
            &self.mx,
            &self.store,
            user,
            crate::matrix::device::Purpose::Encryption(self.instance.as_deref()),
        )
        .await?;
        let path = match &self.instance {
            Some(name) => self.dir.join(format!("{}@{name}", user.localpart())),
            None => self.dir.join(user.localpart()),
        };
        std::fs::create_dir_all(&path)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))?;
        }
        let client = Client::builder()
            .homeserver_url(&self.hs_url)
            .sqlite_store(&path, Some(pickle_key))
            .build()
            .await
            .map_err(|e| crypto_err(format!("crypto store {}: {e}", path.display()), false))?;
        let session = MatrixSession {
            meta: SessionMeta {
                user_id: user.to_owned(),
                device_id: device.device_id,
            },
            tokens: SessionTokens {
                access_token: device.access_token,
                refresh_token: None,
            },
        };
        tracing::debug!(%user, "crypto client: restoring session");
        client
            .matrix_auth()
            .restore_session(session, RoomLoadSettings::default())
            .await
            .map_err(sdk_err)?;
        tracing::debug!(%user, "crypto client: first sync");
        // Uploads the device keys and learns the rooms.
        client
            .sync_once(SyncSettings::default().timeout(Duration::ZERO))
            .await
            .map_err(sdk_err)?;
        tracing::debug!(%user, "crypto client: syncing");
        let (c, mut stop) = (client.clone(), self.stop.subscribe());
        let who = user.to_owned();
        tokio::spawn(async move {
            let settings = SyncSettings::default().timeout(Duration::from_secs(30));
            tokio::select! {
                r = c.sync(settings) => if let Err(e) = r { tracing::warn!(user = %who, "sync loop ended: {e}") },
                _ = stop.wait_for(|s| *s) => {},
            }
        });
        // Cross-signing, so Element shows the device as its user's. It waits for the first key
        // query, which the sync loop makes, so it runs beside it. A homeserver may want
        // interactive auth for this; the device works without it.
        let (c, who) = (client.clone(), user.to_owned());
        tokio::spawn(async move {
            match c.encryption().bootstrap_cross_signing_if_needed(None).await {
                Ok(()) => tracing::debug!(user = %who, "cross-signing ready"),
                Err(e) => tracing::warn!(user = %who, "cross-signing not set up: {e}"),
            }
        });
        clients.insert(user.to_owned(), client.clone());
        Ok(client)
    }

    /// `user`'s view of `room`, joining it on that client if the sync did not show it yet.
    async fn room(&self, user: &UserId, room: &RoomId) -> Result<Room> {
        let client = self.client(user).await?;
        if let Some(r) = client
            .get_room(room)
            .filter(|r| r.state() == matrix_sdk::RoomState::Joined)
        {
            return Ok(r);
        }
        client.join_room_by_id(room).await.map_err(sdk_err)
    }

    /// Decrypt an `m.room.encrypted` event with the bot's keys.
    pub async fn decrypt(&self, bot: &UserId, room: &RoomId, event: &Value) -> Result<Decrypted> {
        let r = self.room(bot, room).await?;
        let raw = Raw::from_json_string(event.to_string())?;
        let te = r.decrypt_event(&raw, None).await.map_err(sdk_err)?;
        match te.kind {
            TimelineEventKind::Decrypted(d) => {
                let mut clear: Value = serde_json::from_str(d.event.json().get())?;
                clear["room_id"] = Value::from(room.as_str());
                Ok(Decrypted::Event(clear))
            }
            TimelineEventKind::UnableToDecrypt { utd_info, .. } => {
                Ok(Decrypted::Undecryptable(format!("{:?}", utd_info.reason)))
            }
            TimelineEventKind::PlainText { event } => {
                let mut plain: Value = serde_json::from_str(event.json().get())?;
                plain["room_id"] = Value::from(room.as_str());
                Ok(Decrypted::Event(plain))
            }
        }
    }

    /// Send an event as `user`, encrypted by that user's own device. `txn_id` makes a retry
    /// after a crash a no-op, as for plain sends.
    pub async fn send(
        &self,
        user: &UserId,
        room: &RoomId,
        event_type: &str,
        txn_id: &TransactionId,
        content: &Value,
    ) -> Result<OwnedEventId> {
        let r = self.room(user, room).await?;
        let res = r
            .send_raw(event_type, content)
            .with_transaction_id(txn_id)
            .await
            .map_err(sdk_err)?;
        Ok(res.response.event_id)
    }

    /// Encrypt and upload a file as `user`; the `file` object of the event content.
    /// (The ciphertext is uploaded as application/octet-stream, as the spec wants; the real type
    /// goes in the event's `info`.)
    pub async fn upload(&self, user: &UserId, bytes: Vec<u8>) -> Result<Value> {
        let client = self.client(user).await?;
        let mut reader = std::io::Cursor::new(bytes);
        let file = client.upload_encrypted_file(&mut reader).await.map_err(sdk_err)?;
        Ok(serde_json::to_value(file)?)
    }

    /// Download and decrypt the file of an encrypted event (`content.file`) with the bot's client.
    pub async fn download(&self, bot: &UserId, file: &Value) -> Result<Vec<u8>> {
        let client = self.client(bot).await?;
        let file = serde_json::from_value(file.clone())?;
        let request = MediaRequestParameters {
            source: MediaSource::Encrypted(Box::new(file)),
            format: MediaFormat::File,
        };
        client.media().get_media_content(&request, false).await.map_err(sdk_err)
    }
}

fn crypto_err(message: impl Into<String>, transient: bool) -> Error {
    Error::Crypto {
        message: message.into(),
        transient,
    }
}

/// A matrix-sdk error: network trouble, 5xx and rate limits are worth retrying.
fn sdk_err(e: matrix_sdk::Error) -> Error {
    let transient = match e.as_client_api_error() {
        Some(api) => api.status_code.is_server_error() || api.status_code.as_u16() == 429,
        None => matches!(e, matrix_sdk::Error::Http(_)),
    };
    crypto_err(e.to_string(), transient)
}
