//! Standby and the fallback window: what waits while Telegram is not live, and when the bridge
//! puts it in standby by itself.
//!
//! - **Standby holds, it never drops.** The poller keeps reading Telegram into the durable inbox
//!   (Telegram itself keeps unread updates for 24 hours only), unless `gateway.telegram.enabled`
//!   is false; the lanes of both directions take nothing from their inboxes, so what is said on
//!   either side waits there, in order, for as long as the standby lasts.
//! - **Rollback bridges the backlog.** When the mode leaves standby, the Telegram lanes bridge
//!   what waited, in order; messages posted before the rollback show their original time. On
//!   the Matrix side each chat first gets its rollback announcement; then a room whose backlog
//!   holds more than `gateway.rollback_digest_over` messages gets one digest (who said what,
//!   when, and a link to the room) instead, and the rest is posted one by one, at the group's
//!   pace.
//! - **The fallback window** (`gateway.fallback_hours`): a cutover puts Telegram in standby by
//!   itself when the window ends (announced, pinned, recorded as a switch with the reason
//!   [`FALLBACK_ENDED`]). The config still says `cutover`; the mode in force is computed from it
//!   and the switch history ([`Bridge::effective_mode`]), so a restart or a reload keeps the
//!   standby, a rollback ends it, and a longer window brings the fallback back.

use std::sync::atomic::Ordering;
use std::time::Duration;

use ruma::{OwnedRoomId, OwnedUserId};
use serde_json::Value;
use teloxide::types::MessageId;
use tokio::sync::watch;

use super::Bridge;
use super::cutover::Mode;
use crate::config::Config;
use crate::error::Result;
use crate::split::{Measure, TELEGRAM_TEXT, split_html};
use crate::storage::now_ms;
use crate::telegram::format::escape_html;

/// The reason recorded when the fallback window ends.
pub const FALLBACK_ENDED: &str = "the fallback window ended";

/// Hours into a standby with Telegram disabled at which the log warns again (Telegram drops
/// unread updates after 24).
const UNREAD_WARNINGS_H: [i64; 4] = [12, 18, 23, 24];

/// Longest excerpt of one message in a digest, in characters.
const DIGEST_EXCERPT: usize = 300;

/// A message held by a standby, for a digest.
struct Held {
    key: i64,
    at: i64,
    sender: OwnedUserId,
    text: String,
}

impl Bridge {
    /// The mode in force under `cfg`, given the last recorded switch (`prev`, its reason): the
    /// configured mode, except that a cutover whose fallback window has ended is a standby.
    pub async fn effective_mode(&self, cfg: &Config, prev: Option<(Mode, &str)>) -> Result<Mode> {
        let configured = Mode::of(cfg);
        if configured != Mode::Cutover {
            return Ok(configured);
        }
        // The window runs from the cutover in force; a cutover starting now has all of it.
        let running = match prev {
            Some((Mode::Cutover, _)) => true,
            Some((Mode::Standby, reason)) => reason == FALLBACK_ENDED,
            _ => false,
        };
        if !running {
            return Ok(Mode::Cutover);
        }
        match self.fallback_ends_at(cfg).await? {
            Some(end) if end <= now_ms() => Ok(Mode::Standby),
            _ => Ok(Mode::Cutover),
        }
    }

    /// When the fallback window of the cutover in force ends (unix ms): `None` without a window
    /// (`fallback_hours: 0`) or without a cutover.
    pub async fn fallback_ends_at(&self, cfg: &Config) -> Result<Option<i64>> {
        fallback_end(cfg, &self.store).await
    }

    /// The last recorded switch: its mode and reason.
    pub(super) async fn last_switch(&self) -> Result<Option<(Mode, String)>> {
        Ok(self
            .store
            .switches()
            .await?
            .pop()
            .and_then(|s| Some((Mode::parse(&s.to_mode)?, s.reason))))
    }

    /// Put `mode` in force (the poller reads Telegram whenever it is enabled).
    pub(super) async fn put_in_force(&self, mode: Mode) -> Result<()> {
        let resumed = self.store.left_standby_at().await?.unwrap_or(0);
        self.cutover.resumed_at.store(resumed, Ordering::Relaxed);
        self.cutover.set(mode, self.cfg().gateway.telegram.enabled);
        Ok(())
    }

    /// Until the daemon stops: put Telegram in standby when the fallback window ends.
    pub async fn run_fallback_timer(&self, mut shutdown: watch::Receiver<bool>) {
        loop {
            if *shutdown.borrow() {
                return;
            }
            let silent = self.mode() == Mode::Standby && !self.cfg().gateway.telegram.enabled;
            let wait = match self.mode() {
                Mode::Cutover => match self.fallback_ends_at(&self.cfg()).await {
                    Ok(Some(end)) => Duration::from_millis((end - now_ms()).max(0) as u64),
                    Ok(None) => Duration::from_secs(3600),
                    Err(e) => {
                        tracing::warn!("cannot read when the fallback window ends: {e}");
                        Duration::from_secs(60)
                    }
                },
                // Telegram is not read: warn as its 24 hours of unread updates run out.
                Mode::Standby if silent => match self.store.standby_since().await {
                    Ok(Some(since)) => {
                        let line = unread_window_line(since, now_ms());
                        tracing::warn!("{line}");
                        let next = UNREAD_WARNINGS_H
                            .iter()
                            .map(|h| since + h * 3_600_000)
                            .find(|at| *at > now_ms());
                        next.map_or(Duration::from_secs(24 * 3600), |at| {
                            Duration::from_millis((at - now_ms()).max(1000) as u64)
                        })
                    }
                    _ => Duration::from_secs(3600),
                },
                _ => Duration::from_secs(3600),
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {
                    if silent {
                        continue; // the warning is logged at the top
                    }
                    if let Err(e) = self.reconsider_mode().await {
                        tracing::warn!("cannot end the fallback window yet: {e}");
                        tokio::time::sleep(Duration::from_secs(10)).await;
                    }
                }
                _ = self.cutover.reconsider.notified() => {},
                r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { return },
            }
        }
    }

    /// Switch to the mode in force now, if it changed (the fallback window ended).
    async fn reconsider_mode(&self) -> Result<()> {
        let _switching = self.cutover.switching.lock().await;
        // Kept against this instance's config at a takeover: not recomputed from that config
        // (it would switch to the file's mode) until a reload says what the file means.
        if self.cutover.pinned.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(());
        }
        let from = self.mode();
        let last = self.last_switch().await?;
        let to = self
            .effective_mode(&self.cfg(), last.as_ref().map(|(m, r)| (*m, r.as_str())))
            .await?;
        if from != to {
            self.switch(from, to, FALLBACK_ENDED).await?;
            self.put_in_force(to).await?;
        }
        Ok(())
    }

    /// Whether the Telegram -> Matrix lane of `chat` waits: in standby, and after a rollback
    /// until the chat's rooms have the announcement (it says the backlog follows).
    pub fn holds_telegram(&self, chat: Option<i64>) -> bool {
        self.mode() == Mode::Standby
            || chat.is_some_and(|c| {
                let c = self.portals.current_chat(c);
                self.cutover.notice_pending.lock().expect("lock").contains(&c)
            })
    }

    /// Whether the lanes of `chat`'s rooms (Matrix -> Telegram) wait: in standby, and after a
    /// rollback until the backlog is dealt with.
    pub fn holds_matrix(&self, chat: i64) -> bool {
        self.mode() == Mode::Standby || self.cutover.backlog_pending.lock().expect("lock").contains(&chat)
    }

    /// Whether something posted at `at` (unix ms) and bridged now was held by a standby.
    pub fn was_held(&self, at: i64) -> bool {
        at < self.cutover.resumed_at.load(Ordering::Relaxed)
    }

    /// Count the chats of `cfg` as waiting for their backlog to be dealt with (after a
    /// rollback from standby, until their announcement is posted).
    pub(super) fn backlog_owed(&self, cfg: &Config) {
        let mut pending = self.cutover.backlog_pending.lock().expect("lock");
        let mut notice = self.cutover.notice_pending.lock().expect("lock");
        for r in &cfg.rooms {
            pending.insert(self.portals.current_chat(r.telegram));
            notice.insert(self.portals.current_chat(r.telegram));
        }
    }

    /// After the rollback announcement in `chat`: each of its rooms whose Matrix backlog is over
    /// `gateway.rollback_digest_over` messages gets a digest of it on Telegram; the rest is left
    /// to the lanes, which post it one by one. Then the chat's lanes run again.
    pub(super) async fn settle_backlog(&self, chat: i64) -> Result<()> {
        if !self.cutover.backlog_pending.lock().expect("lock").contains(&chat) {
            return Ok(());
        }
        let limit = self.cfg().gateway.rollback_digest_over;
        for room in self.portals.rooms_of_chat(chat) {
            let held = self.held_messages(&room).await?;
            if held.is_empty() || held.len() <= limit {
                continue;
            }
            let Some(place) = self.portals.place_for_room(&room) else {
                continue;
            };
            let html = self.digest_html(&room, &held).await;
            // Parts are recorded as they are posted: a retry (an error, a restart) posts only
            // what is missing, and the messages leave the inbox together, after the last part.
            let progress = format!("digest:{room}:{}", held[0].key);
            let done: usize = self
                .store
                .get_kv(&progress)
                .await?
                .and_then(|d| d.parse().ok())
                .unwrap_or(0);
            for (i, part) in split_html(&html, TELEGRAM_TEXT, Measure::VisibleUtf16)
                .into_iter()
                .enumerate()
            {
                if i < done {
                    continue;
                }
                let turn = self.tg.turn_at(place).await;
                let sent: MessageId = self.tg.send_html(turn, part, None).await?;
                self.store.set_kv(&progress, &(i + 1).to_string()).await?;
                tracing::debug!(%room, msg = sent.0, "digest part posted");
            }
            let keys: Vec<i64> = held.iter().map(|h| h.key).collect();
            self.store.done_mx_inbox_all(&keys).await?;
            tracing::info!(%room, chat, messages = held.len(), "matrix backlog of the standby posted as a digest");
        }
        self.cutover.backlog_pending.lock().expect("lock").remove(&chat);
        Ok(())
    }

    /// The messages of `room` that wait from before the rollback (decrypted where needed);
    /// edits, reactions, redactions and state stay for the lanes.
    async fn held_messages(&self, room: &OwnedRoomId) -> Result<Vec<Held>> {
        let mut held = Vec::new();
        for item in self.store.mx_lane_all(room).await? {
            let Ok(mut ev) = serde_json::from_str::<Value>(&item.json) else {
                continue;
            };
            let at = ev["origin_server_ts"].as_i64().unwrap_or(0);
            if !self.was_held(at) || self.is_own_echo(&ev) {
                continue;
            }
            if ev["type"] == "m.room.encrypted" {
                match self.intents.decrypt(room, &ev).await {
                    Ok(crate::matrix::crypto::Decrypted::Event(clear)) => ev = clear,
                    _ => {
                        ev["type"] = "m.room.message".into();
                        ev["content"] = serde_json::json!({"body": "(an encrypted message the bridge could not read)"});
                    }
                }
            }
            let content = &ev["content"];
            let kind = ev["type"].as_str().unwrap_or_default();
            if !matches!(kind, "m.room.message" | "m.sticker") || content["m.relates_to"]["rel_type"] == "m.replace" {
                continue;
            }
            let Some(sender) = ev["sender"].as_str().and_then(|s| OwnedUserId::try_from(s).ok()) else {
                continue;
            };
            let body = content["body"].as_str().unwrap_or_default();
            let text = match content["msgtype"].as_str() {
                Some("m.text" | "m.notice" | "m.emote") => body.to_owned(),
                _ => format!("[file] {body}"),
            };
            held.push(Held {
                key: item.key,
                at,
                sender,
                text,
            });
        }
        Ok(held)
    }

    /// The digest: a heading, then one line per message (time, name, excerpt), then the link.
    async fn digest_html(&self, room: &OwnedRoomId, held: &[Held]) -> String {
        let mut html = format!(
            "<b>While Telegram was in standby, {} messages were posted on Matrix:</b>",
            held.len()
        );
        for h in held {
            let name = escape_html(&self.matrix_name(room, &h.sender).await);
            let mut text: String = h.text.chars().take(DIGEST_EXCERPT).collect();
            if text.len() < h.text.len() {
                text.push('…');
            }
            html.push_str(&format!("\n{} <b>{name}</b>: {}", held_time(h.at), escape_html(&text)));
        }
        html.push_str(&format!("\nThe whole conversation: https://matrix.to/#/{room}"));
        html
    }
}

/// When the fallback window of the cutover in force ends (unix ms): `None` without a window
/// (`fallback_hours: 0`) or without a cutover.
async fn fallback_end(cfg: &Config, store: &crate::storage::Store) -> Result<Option<i64>> {
    let hours = cfg.gateway.fallback_hours;
    if hours <= 0.0 {
        return Ok(None);
    }
    let Some(since) = store.cutover_since().await? else {
        return Ok(None);
    };
    Ok(Some(since + (hours * 3_600_000.0) as i64))
}

/// Lines for `tgmx status` (also without the daemon): when the fallback window ends, what waits
/// for a rollback, and how long Telegram keeps what the bot does not read.
pub async fn status_lines(cfg: &Config, store: &crate::storage::Store) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    let now = now_ms();
    let current = store.current_mode().await?;
    match current.as_deref() {
        Some("cutover") => match fallback_end(cfg, store).await? {
            Some(end) => lines.push(format!(
                "fallback window: telegram goes to standby at {} (in {}), unless rolled back",
                held_time(end),
                span((end - now).max(0))
            )),
            None => lines.push("fallback window: none (gateway.fallback_hours: 0)".into()),
        },
        Some("standby") => {
            let (tg, mx) = store.inbox_counts().await?;
            lines.push(format!(
                "waiting for the rollback: {tg} Telegram updates, {mx} Matrix events (bridged in order when telegram is live again)"
            ));
            if !cfg.gateway.telegram.enabled {
                let since = store.standby_since().await?.unwrap_or(now);
                lines.push(unread_window_line(since, now));
            }
        }
        _ => {}
    }
    Ok(lines)
}

/// With Telegram disabled nothing is read, and Telegram keeps unread updates for 24 hours: how
/// long is left since `since` (unix ms), or that the window is closed.
pub fn unread_window_line(since: i64, now: i64) -> String {
    let end = since + 24 * 3_600_000;
    if end > now {
        format!(
            "telegram is not read (gateway.telegram.enabled: false): its unread updates are kept until {} ({} left); \
             set it true (the bot reads, relays nothing in standby) to lose nothing",
            held_time(end),
            span(end - now)
        )
    } else {
        format!(
            "telegram is not read (gateway.telegram.enabled: false) since {}: updates older than 24 hours are lost on \
             telegram's side",
            held_time(since)
        )
    }
}

/// "3 h 05 min", "12 min", "0 min".
fn span(ms: i64) -> String {
    let mins = ms / 60_000;
    match mins / 60 {
        0 => format!("{mins} min"),
        h => format!("{h} h {:02} min", mins % 60),
    }
}

/// "2026-12-01 14:02 UTC": when something held by a standby was posted.
pub fn held_time(at_ms: i64) -> String {
    let full = crate::report::fmt_ms(at_ms);
    // "YYYY-MM-DD HH:MM:SS UTC" without the seconds.
    match full.get(..16) {
        Some(minutes) => format!("{minutes} UTC"),
        None => full,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_unread_window_counts_down_then_says_it_closed() {
        let h = 3_600_000;
        let open = super::unread_window_line(0, 5 * h + 60_000);
        assert!(open.contains("(18 h 59 min left)"), "{open}");
        let closed = super::unread_window_line(0, 25 * h);
        assert!(closed.contains("older than 24 hours are lost"), "{closed}");
    }

    #[test]
    fn held_times_read_to_the_minute() {
        assert_eq!(super::held_time(1_764_597_720_000), "2025-12-01 14:02 UTC");
    }
}
