//! The bridge core: it decides. The Matrix and Telegram modules only convert and transport.
//!
//! Work flows through two durable inboxes (SQLite): Telegram updates and appservice events are
//! stored first and bridged afterwards by one worker per portal and direction (a lane, see
//! `lanes`), in arrival order. A worker retries a transient failure (with backoff, honouring
//! `retry_after`) without moving on, so order is kept and nothing is skipped; a permanent failure
//! is recorded in `failures` and skipped.
//!
//! The core is split into parts that each own their state: [`portals::Portals`] (chat <-> room,
//! setup), [`people::People`] (display names, avatar checks), [`cutover::Cutover`] (the mode),
//! [`catch_up::Gaps`] (when to look for skipped events), [`media::MediaLimits`] and
//! [`matrix_in::Unlinked`] (posts whose link is still to be written). [`Bridge`] holds them with
//! the transports and the config; `app` wires it up through methods only.

pub mod catch_up;
pub mod cutover;
pub mod dedupe;
pub mod lanes;
pub mod management;
pub mod matrix_in;
pub mod media;
pub mod people;
pub mod portals;
pub mod room_details;
pub mod service;
pub mod standby;
pub mod telegram_in;
pub mod upgrade;

use std::sync::{Arc, RwLock};

use ruma::{OwnedUserId, UserId};
use serde_json::Value;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::matrix::client::MatrixClient;
use crate::storage::Store;
use crate::telegram::TelegramSender;

pub use lanes::{DoneAt, run_worker};

/// Key in event content marking events the bridge itself sent (echo suppression for double
/// puppets, whose events come back to us under a real user's id).
pub const SOURCE_KEY: &str = "fi.tgmx.source";

/// The bridge core: the transports, the config, and the parts that own the core's state.
pub struct Bridge {
    /// The configuration in force; replaced as a whole on reload.
    cfg: RwLock<Arc<Config>>,
    /// The database: inboxes, message map, portals, puppets, audit rows.
    store: Store,
    /// Plain client-server requests (registration, joins, profiles, media limits).
    mx: MatrixClient,
    /// Every Bot API request (paced, typed outcomes).
    tg: Arc<TelegramSender>,
    /// The bridge bot's Matrix id.
    bot_mxid: OwnedUserId,
    /// The users the bridge acts as: sends and uploads, plain or encrypted as the room is (which
    /// rooms are encrypted, and the devices for them, are known there).
    intents: crate::matrix::intent::Intents,
    /// Reads room timelines as the bot's device (catch-up, `tgmx audit`).
    reader: crate::matrix::device::TimelineReader,
    /// Chat <-> room, and whether setup is done.
    portals: portals::Portals,
    /// Display names and avatar checks.
    people: people::People,
    /// The mode in force and the announcer's wake-up (the cutover state's one owner).
    cutover: cutover::Cutover,
    /// When lanes look for events the homeserver skipped.
    gaps: catch_up::Gaps,
    /// The homeserver's upload limit, asked once.
    media: media::MediaLimits,
    /// Posts whose message-map row could not be written yet.
    unlinked: matrix_in::Unlinked,
    /// The management room (operators' `!tgmx` commands) and its rollcalls.
    management: management::Management,
}

impl Bridge {
    pub fn new(cfg: Config, store: Store, mx: MatrixClient, tg: TelegramSender) -> Bridge {
        let bot_mxid = cfg.bot_user_id();
        let mode = cutover::Mode::of(&cfg);
        let crypto = crate::matrix::crypto::Crypto::new(
            &cfg.homeserver.url,
            mx.clone(),
            store.clone(),
            cfg.crypto_dir(),
            cfg.encryption.pickle_key.clone(),
        )
        .for_instance(cfg.instance.clone());
        let reader = crate::matrix::device::TimelineReader::new(mx.clone(), store.clone(), bot_mxid.clone());
        let intents = crate::matrix::intent::Intents::new(mx.clone(), crypto, bot_mxid.clone());
        Bridge {
            reader,
            intents,
            cfg: RwLock::new(Arc::new(cfg)),
            store,
            mx,
            tg: Arc::new(tg),
            bot_mxid,
            portals: Default::default(),
            people: Default::default(),
            cutover: cutover::Cutover::new(mode),
            gaps: Default::default(),
            media: Default::default(),
            unlinked: Default::default(),
            management: Default::default(),
        }
    }

    /// The database.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The Telegram side (for the poller).
    pub fn telegram(&self) -> Arc<TelegramSender> {
        self.tg.clone()
    }

    /// Chat <-> room and the setup state.
    pub fn portals(&self) -> &portals::Portals {
        &self.portals
    }

    /// Stop the devices of encrypted rooms (at shutdown).
    pub fn shutdown_devices(&self) {
        self.intents.shutdown();
    }

    /// The configuration in force.
    pub fn cfg(&self) -> Arc<Config> {
        self.cfg.read().expect("lock").clone()
    }

    fn set_cfg(&self, cfg: Config) {
        *self.cfg.write().expect("lock") = Arc::new(cfg);
    }

    /// Whether the chat is configured (even if its room is not resolved yet).
    pub fn chat_is_configured(&self, chat: i64) -> bool {
        self.cfg().rooms.iter().any(|r| r.telegram == chat)
    }

    /// Send an event as `user` if the encryption policy lets the bridge act in `room` (the
    /// intent encrypts it in an encrypted room).
    pub async fn send_event(
        &self,
        room: &ruma::RoomId,
        user: &UserId,
        event_type: &str,
        txn_id: &ruma::TransactionId,
        content: &Value,
    ) -> Result<ruma::OwnedEventId> {
        self.check_encryption(room).await?;
        if self.is_encrypted(room) {
            if !self.cfg().encryption.allow {
                return Err(Error::Config(format!(
                    "room {room} is encrypted and `encryption.allow` is off: not bridged"
                )));
            }
        } else if self.cfg().encryption.require {
            return Err(Error::Config(format!(
                "room {room} is not encrypted and `encryption.require` is on: not bridged"
            )));
        }
        self.intents.user(user).send(room, event_type, txn_id, content).await
    }

    pub fn is_encrypted(&self, room: &ruma::RoomId) -> bool {
        self.intents.is_encrypted(room)
    }

    /// A portal turned encryption on (its `m.room.encryption` state): from now on events are
    /// encrypted, and the bot's device exists so senders share their keys with it.
    pub async fn room_encrypted(&self, room: &ruma::RoomId) -> Result<()> {
        self.intents.set_encrypted(room);
        if self.cfg().encryption.allow {
            self.intents.ensure_bot_device().await?;
        }
        Ok(())
    }

    /// Read a room's encryption state unless it is known in this run.
    pub(crate) async fn check_encryption(&self, room: &ruma::RoomId) -> Result<()> {
        if self.intents.learn_encryption(room).await? {
            self.room_encrypted(room).await?;
        }
        Ok(())
    }

    /// Read the encryption state of every portal not known yet, several at a time (after setup,
    /// so that the bot's device starts early in encrypted rooms and senders share their room
    /// keys with it; `/ready` does not wait for this).
    pub async fn refresh_encryption(&self) -> Result<()> {
        use futures::StreamExt;
        let rooms = self.portals.rooms();
        let mut checks = futures::stream::iter(
            rooms
                .into_iter()
                .map(|room| async move { self.check_encryption(&room).await }),
        )
        .buffer_unordered(8);
        while let Some(checked) = checks.next().await {
            checked?;
        }
        Ok(())
    }
}
