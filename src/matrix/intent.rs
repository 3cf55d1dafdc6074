//! Acting users ("intents", as in mautrix): sends and uploads as one user, plain or encrypted as
//! the room requires, so the bridge core never branches on encryption.
//!
//! [`Intents`] holds the client, the devices ([`Crypto`]) and which rooms are encrypted (their
//! `m.room.encryption` state: read once per run on first use, or reported by the bridge when the
//! event arrives). [`Intents::user`] gives the [`Intent`] of one user: [`Intent::send`] encrypts
//! with that user's own device in an encrypted room and sends in cleartext elsewhere;
//! [`Intent::upload`] likewise returns an encrypted `file` or a plain `url`.
//!
//! Whether the bridge may act in a room at all (`encryption.allow` / `encryption.require`) is
//! the core's decision, made before it asks an intent to send.

use std::collections::HashSet;
use std::sync::RwLock;

use ruma::{OwnedEventId, OwnedMxcUri, OwnedRoomId, OwnedUserId, RoomId, TransactionId, UserId};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::matrix::client::MatrixClient;
use crate::matrix::crypto::{Crypto, Decrypted};

/// Where the bytes of a file are: a plain `mxc://` URI, or an encrypted file (`EncryptedFile`
/// JSON, with its own `url` and keys).
#[derive(Clone, Debug, PartialEq)]
pub enum MediaSource {
    Plain(OwnedMxcUri),
    Encrypted(Value),
}

impl MediaSource {
    /// The key under which event content carries it: `url` or `file` (thumbnails:
    /// `thumbnail_url` / `thumbnail_file`).
    pub fn key(&self) -> &'static str {
        match self {
            MediaSource::Plain(_) => "url",
            MediaSource::Encrypted(_) => "file",
        }
    }

    /// Its JSON in event content.
    pub fn into_json(self) -> Value {
        match self {
            MediaSource::Plain(mxc) => Value::from(mxc.as_str()),
            MediaSource::Encrypted(file) => file,
        }
    }

    /// The file of a media event's content: `file` (an object) when it is encrypted, else `url`.
    /// `None` when the content names neither.
    pub fn of_content(content: &Value) -> Option<MediaSource> {
        let file = content.get("file").filter(|f| f.is_object());
        let url = content["url"].as_str().or(file.and_then(|f| f["url"].as_str()))?;
        Some(match file {
            Some(f) => MediaSource::Encrypted(f.clone()),
            None => MediaSource::Plain(OwnedMxcUri::from(url)),
        })
    }
}

/// The users the bridge acts as, in plain and encrypted rooms alike.
pub struct Intents {
    mx: MatrixClient,
    /// The devices of the bot and the puppets, created on first use.
    crypto: Crypto,
    /// The bridge bot: reads room state, decrypts, downloads encrypted files.
    bot: OwnedUserId,
    /// Rooms with encryption on.
    encrypted: RwLock<HashSet<OwnedRoomId>>,
    /// Rooms whose encryption state is known in this run: a room is checked before the first
    /// send into it, so start-up need not wait for one request per room, and a room that turned
    /// encryption on while the bridge was down never gets a cleartext event.
    known: RwLock<HashSet<OwnedRoomId>>,
}

impl Intents {
    pub fn new(mx: MatrixClient, crypto: Crypto, bot: OwnedUserId) -> Intents {
        Intents {
            mx,
            crypto,
            bot,
            encrypted: RwLock::default(),
            known: RwLock::default(),
        }
    }

    /// Acting as `user`.
    pub fn user<'a>(&'a self, user: &'a UserId) -> Intent<'a> {
        Intent { api: self, user }
    }

    /// Acting as the bridge bot.
    pub fn bot(&self) -> Intent<'_> {
        self.user(&self.bot)
    }

    /// Make sure the bot's device exists and syncs, so that senders in encrypted rooms share
    /// their room keys with it.
    pub async fn ensure_bot_device(&self) -> Result<()> {
        self.crypto.ensure_device(&self.bot).await
    }

    /// Stop the devices' sync loops (at shutdown).
    pub fn shutdown(&self) {
        self.crypto.shutdown();
    }

    /// Whether `room` is known to be encrypted.
    pub fn is_encrypted(&self, room: &RoomId) -> bool {
        self.encrypted.read().expect("lock").contains(room)
    }

    /// `room` has encryption on (its `m.room.encryption` state arrived or was read). Returns
    /// whether that is news.
    pub fn set_encrypted(&self, room: &RoomId) -> bool {
        self.known.write().expect("lock").insert(room.to_owned());
        let new = self.encrypted.write().expect("lock").insert(room.to_owned());
        if new {
            tracing::info!(%room, "room is encrypted");
        }
        new
    }

    /// Read `room`'s encryption state as the bot, unless it is known in this run. Returns
    /// whether this read found the room encrypted (news to the caller).
    pub async fn learn_encryption(&self, room: &RoomId) -> Result<bool> {
        if self.known.read().expect("lock").contains(room) {
            return Ok(false);
        }
        let encrypted = self.mx.room_encrypted(room, &self.bot).await?;
        if encrypted {
            self.set_encrypted(room);
        }
        self.known.write().expect("lock").insert(room.to_owned());
        Ok(encrypted)
    }

    /// Decrypt an `m.room.encrypted` event of `room` with the bot's keys.
    pub async fn decrypt(&self, room: &RoomId, event: &Value) -> Result<Decrypted> {
        self.crypto.decrypt(&self.bot, room, event).await
    }

    /// Fetch a file, at most `max` bytes: a plain one as the bot, an encrypted one downloaded
    /// and decrypted by the bot's device. Returns (bytes, content type if the server said).
    pub async fn download(&self, source: &MediaSource, max: u64) -> Result<(Vec<u8>, Option<String>)> {
        match source {
            MediaSource::Plain(mxc) => self.mx.download(mxc, max).await,
            MediaSource::Encrypted(file) => {
                let bytes = self.crypto.download(&self.bot, file).await?;
                match bytes.len() as u64 {
                    n if n > max => Err(Error::TooLarge { size: n, limit: max }),
                    _ => Ok((bytes, None)),
                }
            }
        }
    }
}

/// One acting user (the bot, a puppet or a double puppet).
pub struct Intent<'a> {
    api: &'a Intents,
    user: &'a UserId,
}

impl Intent<'_> {
    /// Send an event into `room`: encrypted by this user's own device when the room is
    /// encrypted, else in cleartext. `txn_id` makes a retry after a crash a no-op either way.
    pub async fn send(
        &self,
        room: &RoomId,
        event_type: &str,
        txn_id: &TransactionId,
        content: &Value,
    ) -> Result<OwnedEventId> {
        self.api.learn_encryption(room).await?;
        if self.api.is_encrypted(room) {
            self.api.crypto.send(self.user, room, event_type, txn_id, content).await
        } else {
            self.api.mx.send(room, self.user, event_type, txn_id, content).await
        }
    }

    /// Upload a file for an event in `room`: encrypted by this user's device when the room is
    /// encrypted (the ciphertext goes up as application/octet-stream, `mime` belongs in the
    /// event's `info`), else as is with `mime` and `filename`.
    pub async fn upload(&self, room: &RoomId, bytes: Vec<u8>, mime: &str, filename: &str) -> Result<MediaSource> {
        self.api.learn_encryption(room).await?;
        if self.api.is_encrypted(room) {
            Ok(MediaSource::Encrypted(self.api.crypto.upload(self.user, bytes).await?))
        } else {
            Ok(MediaSource::Plain(
                self.api.mx.upload(self.user, bytes, mime, filename).await?,
            ))
        }
    }

    /// Redact an event (redactions are never encrypted), idempotently (txn id).
    pub async fn redact(&self, room: &RoomId, event: &ruma::EventId, txn_id: &TransactionId) -> Result<()> {
        self.api.mx.redact(room, self.user, event, txn_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn media_source_of_content() {
        assert_eq!(
            MediaSource::of_content(&json!({"url": "mxc://a/b"})),
            Some(MediaSource::Plain(OwnedMxcUri::from("mxc://a/b")))
        );
        let file = json!({"url": "mxc://a/c", "key": {}});
        assert_eq!(
            MediaSource::of_content(&json!({"file": file})),
            Some(MediaSource::Encrypted(file.clone()))
        );
        assert_eq!(MediaSource::of_content(&json!({"file": {"key": {}}})), None);
        assert_eq!(MediaSource::of_content(&json!({"body": "x"})), None);
        assert_eq!(MediaSource::Plain(OwnedMxcUri::from("mxc://a/b")).key(), "url");
        assert_eq!(MediaSource::Encrypted(json!({})).key(), "file");
    }
}
