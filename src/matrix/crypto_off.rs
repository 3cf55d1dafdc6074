//! Built without the `e2ee` cargo feature: no matrix-sdk, so no devices and no encrypted rooms.
//!
//! Everything else bridges as in the full build. A bridged room that is (or turns) encrypted is
//! reported by `tgmx check`, and each event for it fails with a clear reason that `tgmx audit`
//! lists, instead of going out unencrypted.

use std::path::PathBuf;

use ruma::{OwnedEventId, RoomId, TransactionId, UserId};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::matrix::client::MatrixClient;
use crate::storage::Store;

pub use super::crypto_files::{backup_dir, dir_for};

/// Stands in for the devices of the full build; every operation says why it cannot be done.
pub struct Crypto;

/// The result of decrypting one event (never produced by this build).
pub enum Decrypted {
    Event(Value),
    Undecryptable(String),
}

fn unavailable() -> Error {
    Error::Config(
        "this tgmx was built without end-to-end encryption (cargo feature `e2ee`): encrypted rooms are not bridged"
            .into(),
    )
}

impl Crypto {
    /// Whether this build can take part in encrypted rooms.
    pub const AVAILABLE: bool = false;

    pub fn new(_hs_url: &str, _mx: MatrixClient, _store: Store, _dir: PathBuf, _pickle_key: Option<String>) -> Crypto {
        Crypto
    }

    pub fn for_instance(self, _name: Option<String>) -> Crypto {
        self
    }

    pub fn shutdown(&self) {}

    pub async fn ensure_device(&self, _user: &UserId) -> Result<()> {
        Err(unavailable())
    }

    pub async fn decrypt(&self, _bot: &UserId, _room: &RoomId, _event: &Value) -> Result<Decrypted> {
        Err(unavailable())
    }

    pub async fn send(
        &self,
        _user: &UserId,
        _room: &RoomId,
        _event_type: &str,
        _txn_id: &TransactionId,
        _content: &Value,
    ) -> Result<OwnedEventId> {
        Err(unavailable())
    }

    pub async fn upload(&self, _user: &UserId, _bytes: Vec<u8>) -> Result<Value> {
        Err(unavailable())
    }

    pub async fn download(&self, _bot: &UserId, _file: &Value) -> Result<Vec<u8>> {
        Err(unavailable())
    }
}
