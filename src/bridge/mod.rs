//! The bridge core: it decides. The Matrix and Telegram modules only convert and transport.
//!
//! Work flows through two durable inboxes (SQLite): Telegram updates and appservice events are
//! stored first and bridged afterwards by one worker per portal and direction (a lane, see
//! `lanes`), in arrival order. A worker retries a transient failure (with backoff, honouring
//! `retry_after`) without moving on, so order is kept and nothing is skipped; a permanent failure
//! is recorded in `failures` and skipped.

pub mod catch_up;
pub mod cutover;
pub mod dedupe;
pub mod lanes;
pub mod matrix_in;
pub mod media;
pub mod telegram_in;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::FutureExt;

use ruma::{OwnedRoomId, OwnedUserId, UserId};
use serde_json::Value;
use tokio::sync::{Notify, watch};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::matrix::client::MatrixClient;
use crate::storage::{Direction, InboxItem, Store};

/// Key in event content marking events the bridge itself sent (echo suppression for double
/// puppets, whose events come back to us under a real user's id).
pub const SOURCE_KEY: &str = "fi.tgmx.source";

/// Shared state of the bridge core.
pub struct Bridge {
    /// The configuration in force; replaced as a whole on reload.
    cfg: RwLock<Arc<Config>>,
    pub store: Store,
    pub mx: MatrixClient,
    /// Every Bot API request (paced, typed outcomes).
    pub tg: Arc<crate::telegram::TelegramSender>,
    pub bot_mxid: OwnedUserId,
    /// Telegram chat id <-> Matrix room id, filled as configured rooms are resolved.
    portals: RwLock<HashMap<i64, OwnedRoomId>>,
    /// Display names of Matrix senders per room, from member events.
    names: Mutex<HashMap<(OwnedRoomId, OwnedUserId), String>>,
    /// The mode in force and the announcer's wake-up (the cutover state's one owner).
    cutover: cutover::Cutover,
    /// Wakes the room setup loop after the room list changed.
    pub setup_wake: Notify,
    /// Setup finished: the bot exists and every configured room is joined.
    pub ready: std::sync::atomic::AtomicBool,
    /// The homeserver's upload limit once asked (`Some(None)`: it states none).
    hs_upload_limit: Mutex<Option<Option<u64>>>,
    /// When each Telegram user's avatar was last checked.
    avatar_checked: Mutex<HashMap<i64, std::time::Instant>>,
    /// Until when (unix ms) lanes look for events the homeserver skipped (see `catch_up`).
    pub suspect_until: std::sync::atomic::AtomicI64,
    /// Reads room timelines as the bot's device (catch-up, `tgmx audit`, rollcall).
    pub reader: crate::matrix::device::TimelineReader,
    /// The users the bridge acts as: sends and uploads, plain or encrypted as the room is (which
    /// rooms are encrypted, and the devices for them, are known there).
    pub intents: crate::matrix::intent::Intents,
    /// Matrix events already posted to Telegram whose link could not be written (the database
    /// failed right after the send): event id -> Telegram message id. The retry writes the link
    /// instead of posting the message again.
    unlinked: Mutex<HashMap<String, i32>>,
}

impl Bridge {
    pub fn new(cfg: Config, store: Store, mx: MatrixClient, tg: crate::telegram::TelegramSender) -> Bridge {
        let bot_mxid = cfg.bot_user_id();
        let mode = cutover::Mode::of(&cfg);
        let crypto = crate::matrix::crypto::Crypto::new(
            &cfg.homeserver.url,
            mx.clone(),
            store.clone(),
            crate::matrix::crypto::dir_for(&cfg.database),
            cfg.encryption.pickle_key.clone(),
        );
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
            portals: RwLock::default(),
            names: Mutex::default(),
            cutover: cutover::Cutover::new(mode),
            setup_wake: Notify::new(),
            ready: Default::default(),
            suspect_until: Default::default(),
            hs_upload_limit: Mutex::default(),
            avatar_checked: Mutex::default(),
            unlinked: Mutex::default(),
        }
    }

    /// The configuration in force.
    pub fn cfg(&self) -> Arc<Config> {
        self.cfg.read().expect("lock").clone()
    }

    fn set_cfg(&self, cfg: Config) {
        *self.cfg.write().expect("lock") = Arc::new(cfg);
    }

    /// Forget portals whose chat is no longer configured.
    fn retain_configured_portals(&self) {
        let cfg = self.cfg();
        self.portals.write().expect("lock").retain(|chat, room| {
            cfg.rooms
                .iter()
                .any(|r| r.telegram == *chat && (r.matrix.is_room_alias_id() || r.matrix.as_str() == room.as_str()))
        });
    }

    pub fn room_for_chat(&self, chat: i64) -> Option<OwnedRoomId> {
        self.portals.read().expect("lock").get(&chat).cloned()
    }

    pub fn chat_for_room(&self, room: &str) -> Option<i64> {
        self.portals
            .read()
            .expect("lock")
            .iter()
            .find(|(_, r)| r.as_str() == room)
            .map(|(c, _)| *c)
    }

    /// Whether some room is bridged (resolved and joined) already.
    pub fn has_portals(&self) -> bool {
        !self.portals.read().expect("lock").is_empty()
    }

    /// Whether some configured room is not resolved (joined) yet.
    pub fn has_unresolved_rooms(&self) -> bool {
        let portals = self.portals.read().expect("lock");
        self.cfg().rooms.iter().any(|r| !portals.contains_key(&r.telegram))
    }

    /// Portals known from an earlier run, so bridging starts before the homeserver answers.
    pub async fn load_portals(&self) -> Result<()> {
        let cfg = self.cfg();
        for r in &cfg.rooms {
            let Some(portal) = self.store.portal(r.telegram).await? else {
                continue;
            };
            let same = if r.matrix.is_room_alias_id() {
                portal.mx_alias.as_ref().map(|a| a.as_str()) == Some(r.matrix.as_str())
            } else {
                portal.mx_room_id.as_str() == r.matrix.as_str()
            };
            if same {
                self.portals.write().expect("lock").insert(r.telegram, portal.mx_room_id);
            }
        }
        Ok(())
    }

    /// Whether the chat is configured (even if its room is not resolved yet).
    pub fn chat_is_configured(&self, chat: i64) -> bool {
        self.cfg().rooms.iter().any(|r| r.telegram == chat)
    }

    pub fn puppet_mxid(&self, tg_user: i64) -> OwnedUserId {
        let cfg = self.cfg();
        OwnedUserId::try_from(format!(
            "@{}{}:{}",
            cfg.appservice.puppet_prefix, tg_user, cfg.homeserver.server_name
        ))
        .expect("valid puppet id")
    }

    /// A user the bridge acts as: the bot or a puppet. Their events are never relayed back.
    pub fn is_bridge_user(&self, user: &str) -> bool {
        if user == self.bot_mxid.as_str() {
            return true;
        }
        let cfg = self.cfg();
        let Some(rest) = user
            .strip_prefix('@')
            .and_then(|u| u.strip_prefix(cfg.appservice.puppet_prefix.as_str()))
        else {
            return false;
        };
        let server_suffix = format!(":{}", cfg.homeserver.server_name);
        rest.strip_suffix(server_suffix.as_str())
            .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
    }

    /// The Matrix account a mapped person (double puppet) uses, for a Telegram user id.
    pub fn identity_for_tg(&self, tg_user: i64) -> Option<OwnedUserId> {
        self.cfg()
            .identities
            .iter()
            .find(|i| i.telegram == tg_user)
            .map(|i| i.matrix.clone())
    }

    /// The Telegram user id of a mapped Matrix account.
    pub fn identity_for_mx(&self, user: &UserId) -> Option<i64> {
        self.cfg()
            .identities
            .iter()
            .find(|i| i.matrix == user)
            .map(|i| i.telegram)
    }

    /// Ensure the bot exists and every configured room is resolved and joined. Rooms that fail
    /// are retried by the caller.
    pub async fn setup(&self) -> Result<Vec<String>> {
        let cfg = self.cfg();
        self.mx.register(&cfg.appservice.bot_localpart).await?;
        if self.mx.displayname(&self.bot_mxid).await?.as_deref() != Some(&cfg.appservice.bot_displayname) {
            self.mx
                .set_displayname(&self.bot_mxid, &cfg.appservice.bot_displayname)
                .await?;
            tracing::info!(bot = %self.bot_mxid, name = %cfg.appservice.bot_displayname, "bridge bot registered on the homeserver");
        }
        let mut pending = Vec::new();
        for r in &cfg.rooms {
            if self.room_for_chat(r.telegram).is_some() {
                continue;
            }
            match self.mx.join(&r.matrix, &self.bot_mxid).await {
                Ok(room_id) => {
                    let alias = <&ruma::RoomAliasId>::try_from(&*r.matrix).ok();
                    self.store.upsert_portal(r.telegram, &room_id, alias).await?;
                    tracing::info!(room = %r.matrix, %room_id, chat = r.telegram, "portal ready");
                    self.portals.write().expect("lock").insert(r.telegram, room_id);
                }
                Err(e) => {
                    tracing::warn!(room = %r.matrix, "cannot join bridged room yet (invite the bot {}): {e}", self.bot_mxid);
                    pending.push(r.matrix.to_string());
                }
            }
        }
        Ok(pending)
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
        let rooms: Vec<OwnedRoomId> = self.portals.read().expect("lock").values().cloned().collect();
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

    /// An invite for the bot to a configured room arrived: join and link it.
    pub async fn accept_invite(&self, room: &ruma::RoomId) -> Result<bool> {
        let cfg = self.cfg();
        for r in &cfg.rooms {
            let matches = match <&ruma::RoomAliasId>::try_from(&*r.matrix) {
                Err(_) => r.matrix.as_str() == room.as_str(),
                Ok(alias) => self.mx.resolve_alias(alias).await.ok().is_some_and(|id| id == room),
            };
            if matches {
                let room_id = self.mx.join(room.into(), &self.bot_mxid).await?;
                let alias = <&ruma::RoomAliasId>::try_from(&*r.matrix).ok();
                self.store.upsert_portal(r.telegram, &room_id, alias).await?;
                self.portals.write().expect("lock").insert(r.telegram, room_id);
                tracing::info!(%room, chat = r.telegram, "joined bridged room after invite");
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The bot was invited to `room` by `sender` (unknown when only `/sync` told): a configured
    /// room is joined. An invite to a room not configured (yet) stays pending when it comes from
    /// someone the bridge knows (a mapped identity, or a member of a bridged room), so the room
    /// is joined on the reload that adds it; anyone else's is declined.
    pub async fn bot_invited(&self, room: &ruma::RoomId, sender: Option<&UserId>) -> Result<()> {
        if self.chat_for_room(room.as_str()).is_some() {
            return Ok(());
        }
        if self.accept_invite(room).await? {
            self.setup_wake.notify_one(); // readiness may change
            return Ok(());
        }
        let known = match sender {
            Some(s) => self.identity_for_mx(s).is_some() || self.shares_a_portal(s).await,
            None => return Ok(()), // the appservice transaction names the sender
        };
        if known {
            tracing::info!(
                %room, sender = ?sender,
                "invited to a room that is not in `rooms`: the invite stays pending; add the room and reload to bridge it"
            );
        } else {
            tracing::info!(%room, sender = ?sender, "declining an invite from a stranger to a room that is not configured");
            let _ = self.mx.leave(room, &self.bot_mxid).await;
        }
        Ok(())
    }

    /// Whether `user` is joined to some bridged room.
    async fn shares_a_portal(&self, user: &UserId) -> bool {
        let rooms: Vec<OwnedRoomId> = self.portals.read().expect("lock").values().cloned().collect();
        for room in rooms {
            if self.mx.membership(&room, user, &self.bot_mxid).await.as_deref() == Some("join") {
                return true;
            }
        }
        false
    }

    /// Make `user` (puppet or double puppet) a member of `room`: invite by the bot, then join.
    pub async fn ensure_joined(&self, user: &UserId, room: &OwnedRoomId) -> Result<()> {
        if self.store.is_member(user, room).await? {
            return Ok(());
        }
        if let Err(first) = self.mx.join((&**room).into(), user).await {
            tracing::debug!(%user, %room, "join failed ({first}), inviting first");
            if let Err(e) = self.mx.invite(room, &self.bot_mxid, user).await {
                tracing::debug!(%user, %room, "invite failed: {e}");
            }
            self.mx.join((&**room).into(), user).await?;
        }
        self.store.set_member(user, room, true).await
    }

    /// Appservice user query: the bot and puppets of Telegram users we have seen exist.
    pub async fn user_exists(&self, user: &str) -> bool {
        if user == self.bot_mxid.as_str() {
            return true;
        }
        if !self.is_bridge_user(user) {
            return false;
        }
        let prefix_len = 1 + self.cfg().appservice.puppet_prefix.len();
        let id = user
            .get(prefix_len..)
            .and_then(|u| u.split(':').next())
            .and_then(|id| id.parse::<i64>().ok());
        match id {
            Some(id) => matches!(self.store.puppet(id).await, Ok(Some(_))),
            None => false,
        }
    }

    /// Display name of a Matrix user in a room, cached; falls back to the localpart.
    pub async fn matrix_name(&self, room: &OwnedRoomId, user: &UserId) -> String {
        let key = (room.clone(), user.to_owned());
        if let Some(n) = self.names.lock().expect("lock").get(&key) {
            return n.clone();
        }
        let name = match self.mx.member_displayname(room, user, &self.bot_mxid).await {
            Ok(Some(n)) => n,
            _ => user.localpart().to_owned(),
        };
        self.names.lock().expect("lock").insert(key, name.clone());
        name
    }

    pub fn remember_name(&self, room: &OwnedRoomId, user: &UserId, name: Option<&str>) {
        let mut names = self.names.lock().expect("lock");
        match name.filter(|n| !n.is_empty()) {
            Some(n) => names.insert((room.clone(), user.to_owned()), n.to_owned()),
            None => names.remove(&(room.clone(), user.to_owned())),
        };
    }
}

/// When a worker removes bridged items from its inbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoneAt {
    /// After each item, before the next: replaying a bridged item after a crash would send it
    /// again (Matrix -> Telegram: `sendMessage` has no idempotency key).
    EachItem,
    /// Once per batch, in one commit: a replay is a no-op (Telegram -> Matrix: the message map is
    /// written after each send, and Matrix transaction ids derive from Telegram ids).
    EachBatch,
}

/// Drain an inbox in order (`exit_when_drained`: return once it is empty, for a lane of a room
/// or chat that is not a portal): `next` fetches a batch (at most [`crate::storage::BATCH`] items; a
/// shorter batch means the inbox is drained, or `next` woke the worker for the rest), `handle`
/// bridges one item, `done` removes bridged items. Transient failures are retried in place with
/// backoff; permanent ones are recorded and skipped.
#[allow(clippy::too_many_arguments)]
pub async fn run_worker<N, H, D, F1, F2, F3>(
    name: &'static str,
    direction: Direction,
    store: Store,
    wake: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
    done_at: DoneAt,
    exit_when_drained: bool,
    next: N,
    handle: H,
    done: D,
) where
    N: Fn() -> F1,
    F1: std::future::Future<Output = Result<Vec<InboxItem>>>,
    H: Fn(InboxItem) -> F2,
    F2: std::future::Future<Output = Result<()>>,
    D: Fn(Vec<i64>) -> F3,
    F3: std::future::Future<Output = Result<()>>,
{
    // Removing bridged items must not fail quietly: an item left in the inbox is bridged again
    // (Matrix -> Telegram: posted twice). Retried until it works or the daemon stops.
    let finish_stop = shutdown.clone();
    let finish = |keys: Vec<i64>| {
        let (done, store) = (&done, &store);
        let mut stop = finish_stop.clone();
        async move {
            if keys.is_empty() {
                return;
            }
            let mut wait = Duration::from_millis(250);
            while let Err(e) = done(keys.clone()).await {
                tracing::error!(worker = name, ?keys, "cannot mark done, retrying in {wait:?}: {e}");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {},
                    _ = stop.wait_for(|s| *s) => return,
                }
                if !store.until_writable(&mut stop).await {
                    return;
                }
                wait = (wait * 2).min(Duration::from_secs(10));
            }
        }
    };
    // A short batch drained the inbox: wait for a wake-up instead of asking again (a wake-up
    // sent meanwhile is kept by the `Notify`, so nothing waits for the timer).
    let mut drained = false;
    loop {
        if *shutdown.borrow() {
            return;
        }
        if drained {
            tokio::select! {
                _ = wake.notified() => {},
                _ = tokio::time::sleep(Duration::from_secs(5)) => {},
                _ = shutdown.changed() => return,
            }
        }
        // Nothing is bridged while results cannot be saved: a post whose link is lost would be
        // posted again.
        if store.write_fault().is_some() && !store.until_writable(&mut shutdown).await {
            return;
        }
        let batch = match next().await {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(worker = name, "cannot read inbox: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        drained = batch.len() < crate::storage::BATCH;
        let mut bridged = Vec::with_capacity(batch.len());
        for item in batch {
            let key = item.key;
            let mut backoff = Duration::from_millis(250);
            loop {
                // A panic while bridging one item (a bug, or input a parser chokes on) must not
                // stop the worker: it counts as a permanent failure of that item.
                let outcome = std::panic::AssertUnwindSafe(handle(item.clone())).catch_unwind().await;
                let outcome = outcome.unwrap_or_else(|panic| {
                    Err(Error::Internal(format!(
                        "panic while bridging: {}",
                        lanes::panic_message(&*panic)
                    )))
                });
                match outcome {
                    Ok(()) => break,
                    Err(e) if e.is_transient() => {
                        let wait = match &e {
                            Error::Telegram {
                                retry_after: Some(d), ..
                            } => *d,
                            _ => backoff,
                        };
                        if store.write_fault().is_some() {
                            // The database refuses writes: retry as soon as it takes them again.
                            tracing::warn!(worker = name, key, "waiting for database writes to work: {e}");
                            if !store.until_writable(&mut shutdown).await {
                                finish(bridged).await;
                                return;
                            }
                            continue;
                        }
                        tracing::warn!(worker = name, key, "transient failure, retrying in {wait:?}: {e}");
                        // A wake-up (new work, or the room just set up) retries at once, except
                        // where Telegram said how long to wait.
                        let told_to_wait = matches!(
                            &e,
                            Error::Telegram {
                                retry_after: Some(_),
                                ..
                            }
                        );
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {},
                            _ = wake.notified(), if !told_to_wait => {},
                            _ = shutdown.changed() => {
                                finish(bridged).await;
                                return;
                            }
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(60));
                    }
                    Err(e) => {
                        tracing::error!(worker = name, key, "cannot bridge, skipping: {e}");
                        crate::metrics::METRICS.failed(direction);
                        let _ = store
                            .record_failure(direction, &format!("{name}:{key}"), &e.to_string())
                            .await;
                        break;
                    }
                }
            }
            bridged.push(key);
            if done_at == DoneAt::EachItem {
                finish(std::mem::take(&mut bridged)).await;
            }
            if *shutdown.borrow() {
                finish(bridged).await;
                return;
            }
        }
        finish(bridged).await;
        if drained && exit_when_drained {
            return;
        }
    }
}
