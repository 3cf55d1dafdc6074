//! The cutover state machine: which surface is primary, whether Telegram is read at all, the
//! announcements owed when that changes, and live reload of the configuration.
//!
//! The mode is a function of the config (`Mode::of`); the bridge persists every change in
//! `mode_switches` so that a restart neither re-announces nor forgets a switch made while it was
//! down, and the announcements a switch owes are stored with it and posted until done.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use teloxide::types::{ChatId, MessageId};
use tokio::sync::watch;

use super::Bridge;
use crate::config::{Config, Platform};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Telegram is primary; both sides mirrored.
    Parallel,
    /// Matrix is primary; Telegram is still mirrored as fallback.
    Cutover,
    /// Matrix only; nothing is relayed either way. The bot keeps reading Telegram into the
    /// durable inbox (unless `gateway.telegram.enabled` is false), and what waits on both sides
    /// is bridged on rollback (see `bridge::standby`).
    Standby,
}

impl Mode {
    pub fn of(cfg: &Config) -> Mode {
        let g = &cfg.gateway;
        match g.primary_platform {
            Platform::Matrix if !g.telegram.enabled || g.fallback_platform == Platform::None => Mode::Standby,
            Platform::Matrix => Mode::Cutover,
            Platform::Telegram | Platform::None => Mode::Parallel,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Parallel => "parallel",
            Mode::Cutover => "cutover",
            Mode::Standby => "standby",
        }
    }

    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "parallel" => Some(Mode::Parallel),
            "cutover" => Some(Mode::Cutover),
            "standby" => Some(Mode::Standby),
            _ => None,
        }
    }

    /// Whether Telegram is live: its messages are relayed, and the bridge posts there.
    pub fn telegram_live(self) -> bool {
        self != Mode::Standby
    }
}

/// The announcement a transition owes, if any.
pub fn announcement_for(from: Mode, to: Mode) -> Option<&'static str> {
    match (from, to) {
        (a, b) if a == b => None,
        (_, Mode::Parallel) => Some("rollback"),
        (_, Mode::Cutover) => Some("cutover"),
        (_, Mode::Standby) => Some("standby"),
    }
}

/// Keys that only take effect after a restart, and whether they differ.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    if old.homeserver != new.homeserver {
        keys.push("homeserver");
    }
    if old.appservice != new.appservice {
        keys.push("appservice");
    }
    if old.database != new.database {
        keys.push("database");
    }
    if old.gateway.telegram.bot_token != new.gateway.telegram.bot_token {
        keys.push("gateway.telegram.bot_token");
    }
    if old.gateway.telegram.api_url != new.gateway.telegram.api_url {
        keys.push("gateway.telegram.api_url");
    }
    if old.gateway.telegram.poll_timeout != new.gateway.telegram.poll_timeout {
        keys.push("gateway.telegram.poll_timeout");
    }
    if old.logging != new.logging {
        keys.push("logging");
    }
    keys
}

/// The config that takes effect: the new live keys on top of the old restart-only ones.
pub fn merge_live(old: &Config, new: &Config) -> (Config, Vec<&'static str>) {
    let ignored = restart_only_changes(old, new);
    let mut merged = new.clone();
    merged.homeserver = old.homeserver.clone();
    merged.appservice = old.appservice.clone();
    merged.database = old.database.clone();
    merged.logging = old.logging.clone();
    merged.gateway.telegram.bot_token = old.gateway.telegram.bot_token.clone();
    merged.gateway.telegram.api_url = old.gateway.telegram.api_url.clone();
    merged.gateway.telegram.poll_timeout = old.gateway.telegram.poll_timeout;
    (merged, ignored)
}

/// The one owner of the cutover state in memory: the mode in force, what the poller follows of
/// it (read Telegram or not), and the announcer's wake-up. What a switch leaves behind is in the
/// database (`mode_switches`, `announcements`: see `storage::cutover`); what the mode should be
/// is the config's (`Mode::of`). Only [`Bridge::init_mode`] and [`Bridge::reload`] change it.
pub struct Cutover {
    /// The mode in force; the Matrix -> Telegram lanes read it per event.
    mode: watch::Sender<Mode>,
    /// Whether Telegram is read: all the poller is told (it imports nothing of the core).
    /// In standby too, unless `gateway.telegram.enabled` is false (Telegram keeps unread
    /// updates for 24 hours only).
    reading: watch::Sender<bool>,
    /// Wakes the announcer when a switch was recorded or a room it waits for was set up.
    pub(super) announce: tokio::sync::Notify,
    /// When the bridge last left standby (unix ms; 0: never): what was posted before then and
    /// bridged after was held, and shows its original time.
    pub(super) resumed_at: std::sync::atomic::AtomicI64,
    /// Wakes the fallback timer (the mode or the config changed).
    pub(super) reconsider: tokio::sync::Notify,
    /// Held while the mode is being switched (a reload and the fallback timer may race).
    pub(super) switching: tokio::sync::Mutex<()>,
    /// The mode in force was kept against this instance's config at a takeover (the files of
    /// the pair disagree, see [`Bridge::init_mode`]): the fallback timer leaves it alone, and the
    /// next reload applies the file's mode even when the file did not change.
    pub(super) pinned: std::sync::atomic::AtomicBool,
    /// Chats whose Matrix backlog from a standby is not yet dealt with (posted as a digest, or
    /// left to the lanes): their rooms' lanes wait.
    pub(super) backlog_pending: std::sync::Mutex<std::collections::HashSet<i64>>,
    /// Chats whose rooms have not had the rollback announcement yet: their Telegram backlog
    /// waits for it (it says the backlog follows).
    pub(super) notice_pending: std::sync::Mutex<std::collections::HashSet<i64>>,
}

impl Cutover {
    pub fn new(mode: Mode) -> Cutover {
        Cutover {
            mode: watch::Sender::new(mode),
            reading: watch::Sender::new(true),
            announce: tokio::sync::Notify::new(),
            resumed_at: std::sync::atomic::AtomicI64::new(0),
            reconsider: tokio::sync::Notify::new(),
            switching: tokio::sync::Mutex::new(()),
            pinned: std::sync::atomic::AtomicBool::new(false),
            backlog_pending: std::sync::Mutex::new(std::collections::HashSet::new()),
            notice_pending: std::sync::Mutex::new(std::collections::HashSet::new()),
        }
    }

    pub fn mode(&self) -> Mode {
        *self.mode.borrow()
    }

    /// Put `mode` in force; `reads`: whether Telegram is read (`gateway.telegram.enabled`).
    pub(super) fn set(&self, mode: Mode, reads: bool) {
        self.mode.send_replace(mode);
        self.reading.send_replace(reads);
        self.reconsider.notify_one();
    }

    /// Follows whether the mode reads Telegram (for the poller).
    pub fn reading_watch(&self) -> watch::Receiver<bool> {
        self.reading.subscribe()
    }

    /// Post owed announcements now.
    pub fn wake_announcer(&self) {
        self.announce.notify_one();
    }
}

impl Bridge {
    pub fn mode(&self) -> Mode {
        self.cutover.mode()
    }

    /// Post owed announcements now (a room they wait for may just have been set up).
    pub fn wake_announcer(&self) {
        self.cutover.wake_announcer();
    }

    /// Follows whether the mode reads Telegram (for the poller).
    pub fn reading_watch(&self) -> watch::Receiver<bool> {
        self.cutover.reading_watch()
    }

    /// At start: compare the configured mode with the last recorded one. A change made while the
    /// daemon was down is a switch like any other (announced once); the first run only records.
    ///
    /// `took_over_from`: this instance of an active/standby pair just took over from that one.
    /// A configured mode that differs from the one in force is then not a change made while
    /// stopped but, most likely, a config file that was not changed on this host when the other
    /// one was switched: the mode in force stays (an ERROR says so; a reload of this instance's
    /// file applies it).
    pub async fn init_mode(&self, took_over_from: Option<&str>) -> Result<()> {
        let _switching = self.cutover.switching.lock().await;
        let cfg = self.cfg();
        let last = self.last_switch().await?;
        let mode = self
            .effective_mode(&cfg, last.as_ref().map(|(m, r)| (*m, r.as_str())))
            .await?;
        match last.map(|(m, _)| m) {
            None => {
                self.store
                    .record_switch(None, mode.as_str(), "first start", &[])
                    .await?;
                tracing::info!(mode = mode.as_str(), "bridge mode (first start)");
            }
            Some(prev) if prev != mode => {
                let reason = match (prev, mode, Mode::of(&cfg)) {
                    (Mode::Cutover, Mode::Standby, Mode::Cutover) => super::standby::FALLBACK_ENDED,
                    _ => "config changed while stopped",
                };
                if let Some(other) = took_over_from
                    && reason != super::standby::FALLBACK_ENDED
                {
                    tracing::error!(
                        "this instance's config says mode {} but the bridge runs in mode {} (as instance {other} \
                         left it): keeping {}; make the config files of the instances agree (a reload applies \
                         this file's mode)",
                        mode.as_str(),
                        prev.as_str(),
                        prev.as_str()
                    );
                    self.cutover.pinned.store(true, std::sync::atomic::Ordering::SeqCst);
                    return self.keep_mode_in_force(prev, &cfg).await;
                }
                self.switch(prev, mode, reason).await?
            }
            Some(_) => tracing::info!(mode = mode.as_str(), "bridge mode"),
        }
        self.keep_mode_in_force(mode, &cfg).await
    }

    /// [`Bridge::init_mode`]'s end: put `mode` in force. Stopped between a rollback from standby
    /// and its announcements: what waits still waits for them (the digest, and the notice before
    /// the Telegram backlog).
    async fn keep_mode_in_force(&self, mode: Mode, cfg: &Config) -> Result<()> {
        let rolled_back = self
            .store
            .switches()
            .await?
            .pop()
            .is_some_and(|s| s.from_mode.as_deref() == Some("standby") && s.to_mode != "standby");
        if rolled_back && !self.store.pending_announcements().await?.is_empty() {
            self.backlog_owed(cfg);
        }
        self.put_in_force(mode).await
    }

    /// A standby instance taking over: the config file as it is now (it was read at the
    /// instance's start, maybe days ago; a standby applies no reload). Keys that need a restart
    /// keep their values, as in a reload; the mode is then decided by [`Bridge::init_mode`].
    pub fn refresh_config(&self, new: &Config) {
        let (merged, ignored) = merge_live(&self.cfg(), new);
        for key in &ignored {
            tracing::warn!(
                key,
                "config key changed but can only change with a restart; keeping the running value"
            );
        }
        let merged = self.portals.follow_upgrades(merged);
        self.tg.set_per_chat_rate(merged.gateway.telegram.per_chat_per_minute);
        self.tg.set_per_bot_rate(merged.gateway.telegram.per_bot_per_second);
        self.set_cfg(merged);
        // Rooms the standby loaded from its old file and no longer configured are forgotten.
        self.portals.retain_configured(&self.cfg());
    }

    pub(super) async fn switch(&self, from: Mode, to: Mode, reason: &str) -> Result<()> {
        let mut targets = Vec::new();
        if let Some(kind) = announcement_for(from, to) {
            let cfg = self.cfg();
            // The Matrix target is the chat's room, looked up when it is posted: a room not set
            // up yet gets its announcement once it is, not never.
            // One Telegram post per chat (a forum's topic rooms share it), one per Matrix room.
            for r in &cfg.rooms {
                let tg = (format!("tg:{}", r.telegram), kind.to_owned());
                if !targets.contains(&tg) {
                    targets.push(tg);
                }
                let room = match r.telegram_topic {
                    Some(topic) => format!("mxchat:{}/{topic}", r.telegram),
                    None => format!("mxchat:{}", r.telegram),
                };
                targets.push((room, kind.to_owned()));
            }
        }
        self.store
            .record_switch(Some(from.as_str()), to.as_str(), reason, &targets)
            .await?;
        if from == Mode::Standby && to != Mode::Standby {
            // What Matrix said meanwhile waits for each chat's announcement (then a digest or
            // the lanes): see `bridge::standby`.
            self.backlog_owed(&self.cfg());
        }
        tracing::info!(
            from = from.as_str(),
            to = to.as_str(),
            reason,
            "MODE SWITCH {} -> {}",
            from.as_str(),
            to.as_str()
        );
        self.cutover.wake_announcer();
        Ok(())
    }

    /// Apply a new, already validated config. Restart-only keys keep their old values (and are
    /// named in the log); everything else takes effect now.
    pub async fn reload(&self, new: Config) -> Result<()> {
        let old = self.cfg();
        let (merged, ignored) = merge_live(&old, &new);
        // A chat that became a supergroup is bridged under its new id, whatever the file says.
        let merged = self.portals.follow_upgrades(merged);
        for key in &ignored {
            tracing::warn!(
                key,
                "config key changed but can only change with a restart; keeping the running value"
            );
        }
        let pinned = self.cutover.pinned.swap(false, std::sync::atomic::Ordering::SeqCst);
        if merged == *old && !pinned {
            tracing::info!("config reloaded: no change");
            return Ok(());
        }
        let _switching = self.cutover.switching.lock().await;
        let from = self.mode();
        let last = self.last_switch().await?;
        let to = self
            .effective_mode(&merged, last.as_ref().map(|(m, r)| (*m, r.as_str())))
            .await?;
        // Logged once it is in force: a reader of the log (or of `/ready`) sees the new mode.
        let summary = format!(
            "config reloaded: mode {} -> {}, rooms {} -> {}, identities {} -> {}",
            from.as_str(),
            to.as_str(),
            old.rooms.len(),
            merged.rooms.len(),
            old.identities.len(),
            merged.identities.len()
        );
        let rooms_changed = old.rooms != merged.rooms;
        self.tg.set_per_chat_rate(merged.gateway.telegram.per_chat_per_minute);
        self.tg.set_per_bot_rate(merged.gateway.telegram.per_bot_per_second);
        self.set_cfg(merged);
        if rooms_changed || old.gateway.management_room != self.cfg().gateway.management_room {
            self.portals.retain_configured(&self.cfg());
            self.portals.wake_setup();
        }
        if from != to {
            self.switch(from, to, "config reload").await?;
        }
        // Also when the mode stays: whether Telegram is read, or the fallback window, may change.
        self.put_in_force(to).await?;
        tracing::info!("{summary}");
        Ok(())
    }

    fn announcement_text(&self, kind: &str, telegram: bool, room_link: &str) -> String {
        let cfg = self.cfg();
        let a = &cfg.gateway.announcements;
        let t = match (kind, telegram) {
            ("cutover", true) => &a.cutover_telegram,
            ("cutover", false) => &a.cutover_matrix,
            ("standby", true) => &a.standby_telegram,
            ("standby", false) => &a.standby_matrix,
            ("rollback", true) => &a.rollback_telegram,
            _ => &a.rollback_matrix,
        };
        t.replace("{link}", room_link)
    }

    fn matrix_link(&self, chat: i64) -> String {
        let cfg = self.cfg();
        let target = cfg
            .rooms
            .iter()
            .filter(|r| r.telegram == chat)
            .min_by_key(|r| r.telegram_topic.is_some()) // the chat's room before its topics'
            .map(|r| r.matrix.to_string())
            .or_else(|| self.portals.room_for_chat(chat).map(|r| r.to_string()))
            .unwrap_or_default();
        format!("https://matrix.to/#/{target}")
    }

    async fn post_announcement(&self, switch_id: i64, target: &str, kind: &str) -> Result<Option<i32>> {
        if let Some(chat) = target.strip_prefix("tg:").and_then(|c| c.parse::<i64>().ok()) {
            let text = self.announcement_text(kind, true, &self.matrix_link(chat));
            let turn = self.tg.turn(ChatId(chat)).await;
            let sent = self.tg.send_plain(turn, text).await?;
            if let Err(e) = self.tg.pin(ChatId(chat), sent).await {
                tracing::warn!(chat, "cannot pin the announcement (is the bot an admin?): {e}");
            }
            if kind == "rollback" {
                for old in self.store.pinned_announcements(target, switch_id).await? {
                    let _ = self.tg.unpin(ChatId(chat), MessageId(old)).await;
                }
            }
            return Ok(Some(sent.0));
        }
        // `mxchat:<chat>` or `mxchat:<chat>/<topic>`: the room of the chat, or of one forum topic.
        let place = target.strip_prefix("mxchat:").and_then(|p| {
            let (chat, topic) = match p.split_once('/') {
                Some((c, t)) => (c, Some(t.parse::<i32>().ok()?)),
                None => (p, None),
            };
            Some(crate::telegram::Place::topic(chat.parse::<i64>().ok()?, topic))
        });
        let room = match place {
            Some(place) => match self.portals.room_for(place) {
                Some(room) => Some(room.to_string()),
                None if self.cfg().rooms.iter().any(|r| r.place() == place) => {
                    return Err(Error::NotReady(format!("the room for {place} is not set up yet")));
                }
                None => None, // the room left the config meanwhile
            },
            // Recorded before rooms were looked up at posting time.
            None => target.strip_prefix("mx:").map(str::to_owned),
        };
        if let Some(room) = room.as_deref() {
            let room_id =
                <&ruma::RoomId>::try_from(room).map_err(|e| Error::Internal(format!("room id {room}: {e}")))?;
            let place = self
                .portals
                .place_for_room(room_id)
                .unwrap_or(crate::telegram::Place::chat(0));
            let chat = place.chat;
            let body = self.announcement_text(kind, false, &self.matrix_link(chat));
            let content = json!({"msgtype": "m.notice", "body": body});
            self.send_event(
                room_id,
                &self.bot_mxid,
                "m.room.message",
                &crate::matrix::txn::announcement(switch_id, chat, place.topic),
                &content,
            )
            .await?;
        }
        Ok(None)
    }

    /// Post owed announcements until none is left; retried with backoff, never repeated.
    pub async fn run_announcer(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(500);
        loop {
            let pending = self.store.pending_announcements().await.unwrap_or_default();
            let mut failed = false;
            for a in pending {
                let (switch_id, target, kind) = (a.switch_id, a.target, a.kind);
                match self.post_announcement(switch_id, &target, &kind).await {
                    Ok(msg) => {
                        tracing::info!(%target, kind, "announcement posted");
                        if let Err(e) = self.store.announcement_done(switch_id, &target, msg).await {
                            tracing::error!("cannot record announcement: {e}");
                        }
                    }
                    Err(e) if e.is_transient() => {
                        tracing::warn!(%target, "announcement failed, will retry: {e}");
                        failed = true;
                    }
                    Err(e) => {
                        tracing::error!(%target, "announcement cannot be posted: {e}");
                        let _ = self
                            .store
                            .record_failure(
                                crate::storage::Direction::MxToTg,
                                &format!("announce:{target}"),
                                &e.to_string(),
                            )
                            .await;
                        let _ = self.store.announcement_done(switch_id, &target, None).await;
                    }
                }
            }
            // After a rollback from standby: each chat whose rooms were told gets its Telegram
            // backlog, each chat announced on Telegram its Matrix backlog.
            let owed: Vec<i64> = self
                .cutover
                .backlog_pending
                .lock()
                .expect("lock")
                .iter()
                .copied()
                .collect();
            let told = self.cutover.notice_pending.lock().expect("lock").is_empty();
            if !owed.is_empty() || !told {
                let announcing: Vec<String> = match self.store.pending_announcements().await {
                    Ok(p) => p.into_iter().map(|a| a.target).collect(),
                    Err(e) => {
                        tracing::warn!("cannot read the pending announcements: {e}");
                        failed = true;
                        owed.iter()
                            .map(|c| format!("tg:{c}"))
                            .chain(["mxchat:?".into()])
                            .collect()
                    }
                };
                // A room not set up yet cannot have its notice: it holds nothing meanwhile.
                let rooms_waiting: std::collections::HashSet<i64> = announcing
                    .iter()
                    .filter_map(|t| t.strip_prefix("mxchat:"))
                    .filter_map(|t| {
                        let (chat, topic) = match t.split_once('/') {
                            Some((c, t)) => (c.parse().ok()?, Some(t.parse().ok()?)),
                            None => (t.parse().ok()?, None),
                        };
                        let place = crate::telegram::Place::topic(chat, topic);
                        self.portals.room_for(place).map(|_| chat)
                    })
                    .collect();
                let unreadable = announcing.iter().any(|t| t == "mxchat:?");
                if !unreadable {
                    self.cutover
                        .notice_pending
                        .lock()
                        .expect("lock")
                        .retain(|c| rooms_waiting.contains(c));
                }
                for chat in owed {
                    if announcing.contains(&format!("tg:{chat}")) {
                        continue;
                    }
                    match self.settle_backlog(chat).await {
                        Ok(()) => {}
                        Err(e) if e.is_transient() => {
                            tracing::warn!(chat, "the standby's matrix backlog is not posted yet: {e}");
                            failed = true;
                        }
                        Err(e) => {
                            // The lanes post it one by one instead: nothing is lost.
                            tracing::error!(chat, "no digest of the standby's matrix backlog: {e}");
                            self.cutover.backlog_pending.lock().expect("lock").remove(&chat);
                        }
                    }
                }
            }
            let wait = if failed { backoff } else { Duration::from_secs(3600) };
            backoff = if failed {
                (backoff * 2).min(Duration::from_secs(30))
            } else {
                Duration::from_millis(500)
            };
            tokio::select! {
                _ = self.cutover.announce.notified() => {},
                _ = tokio::time::sleep(wait) => {},
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn cfg(gateway: &str) -> Config {
        let text = format!(
            "homeserver: {{url: \"http://h\", server_name: hs}}\nappservice: {{}}\ngateway:\n{gateway}\n  telegram: {{bot_token: \"1:a\"}}\n"
        );
        Config::parse(&text, Path::new(".")).unwrap()
    }

    #[test]
    fn modes_follow_the_gateway_block() {
        assert_eq!(Mode::of(&cfg("  primary_platform: telegram")), Mode::Parallel);
        assert_eq!(
            Mode::of(&cfg("  primary_platform: matrix\n  fallback_platform: telegram")),
            Mode::Cutover
        );
        assert_eq!(
            Mode::of(&cfg("  primary_platform: matrix\n  fallback_platform: none")),
            Mode::Standby
        );
        let mut c = cfg("  primary_platform: matrix\n  fallback_platform: telegram");
        c.gateway.telegram.enabled = false;
        assert_eq!(Mode::of(&c), Mode::Standby);
        assert!(!Mode::Standby.telegram_live() && Mode::Cutover.telegram_live() && Mode::Parallel.telegram_live());
    }

    #[test]
    fn transitions_owe_the_right_announcement() {
        use Mode::*;
        assert_eq!(announcement_for(Parallel, Cutover), Some("cutover"));
        assert_eq!(announcement_for(Cutover, Standby), Some("standby"));
        assert_eq!(announcement_for(Parallel, Standby), Some("standby"));
        assert_eq!(announcement_for(Standby, Parallel), Some("rollback"));
        assert_eq!(announcement_for(Cutover, Parallel), Some("rollback"));
        assert_eq!(announcement_for(Standby, Cutover), Some("cutover"));
        assert_eq!(announcement_for(Cutover, Cutover), None);
    }

    #[test]
    fn restart_only_keys_are_kept_and_named() {
        let old = cfg("  primary_platform: telegram");
        let mut new = cfg("  primary_platform: matrix\n  fallback_platform: telegram");
        new.database = "sqlite://other.db".into();
        let (merged, ignored) = merge_live(&old, &new);
        assert_eq!(ignored, vec!["database"]);
        assert_eq!(merged.database, old.database);
        assert_eq!(Mode::of(&merged), Mode::Cutover);
    }
}
