//! The cutover between Telegram and Matrix as primary: mode switches (`mode_switches`), the
//! announcements each owes (`announcements`), and posts watched for cross-side duplicates
//! (`echo_watch`).

use ruma::UserId;

use super::{Store, now_ms};
use crate::error::Result;

/// A row of `mode_switches`: a change of the bridge's mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switch {
    /// The mode before (`None` for the first start).
    pub from_mode: Option<String>,
    /// The mode after.
    pub to_mode: String,
    /// When (unix ms).
    pub at: i64,
    /// Why (the config changed, while running or stopped; the first start).
    pub reason: String,
}

/// An announcement owed and not yet posted (a row of `announcements` without `done_at`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingAnnouncement {
    /// The switch that owes it.
    pub switch_id: i64,
    /// Where to post it: `tg:<chat>`, `mxchat:<chat>` (the chat's room, looked up when posted)
    /// or `mx:<room>` (recorded by earlier versions). Not an id of either side.
    pub target: String,
    /// Which text (`announcement_for` in `bridge::cutover`).
    pub kind: String,
}

impl Store {
    // ---- modes and announcements ----

    /// The mode of the newest switch, if any was recorded.
    pub async fn current_mode(&self) -> Result<Option<String>> {
        Ok(on!(self.db(), |p| sqlx::query_scalar(
            "SELECT to_mode FROM mode_switches ORDER BY id DESC LIMIT 1"
        )
        .fetch_optional(p)
        .await)?)
    }

    /// Record a switch and the announcements it owes (`(target, kind)`, see
    /// [`PendingAnnouncement`]), atomically. Returns the switch id.
    pub async fn record_switch(
        &self,
        from: Option<&str>,
        to: &str,
        reason: &str,
        announcements: &[(String, String)],
    ) -> Result<i64> {
        self.write(false, async |tx| {
            let id: i64 = on!(tx.db(), |c| sqlx::query_scalar(
                "INSERT INTO mode_switches (from_mode, to_mode, at, reason) VALUES ($1, $2, $3, $4) RETURNING id"
            )
            .bind(from)
            .bind(to)
            .bind(now_ms())
            .bind(reason)
            .fetch_one(c)
            .await)?;
            for (target, kind) in announcements {
                on!(tx.db(), |c| sqlx::query(
                    "INSERT INTO announcements (switch_id, target, kind) VALUES ($1, $2, $3)"
                )
                .bind(id)
                .bind(target)
                .bind(kind)
                .execute(c)
                .await
                .map(|_| ()))?;
            }
            Ok(id)
        })
        .await
    }

    /// When the cutover in force began (unix ms): the newest switch to `cutover` since the last
    /// switch to `parallel`; `None` when there is none (no cutover since the last rollback).
    pub async fn cutover_since(&self) -> Result<Option<i64>> {
        Ok(on!(self.db(), |p| sqlx::query_scalar(
            "SELECT at FROM mode_switches WHERE to_mode = 'cutover'
               AND id > (SELECT COALESCE(MAX(id), 0) FROM mode_switches WHERE to_mode = 'parallel')
             ORDER BY id DESC LIMIT 1",
        )
        .fetch_optional(p)
        .await)?)
    }

    /// When the bridge last left standby (unix ms): what was posted before then, and bridged
    /// after, was held by the standby.
    pub async fn left_standby_at(&self) -> Result<Option<i64>> {
        Ok(on!(self.db(), |p| {
            sqlx::query_scalar(
            "SELECT at FROM mode_switches WHERE from_mode = 'standby' AND to_mode <> 'standby' ORDER BY id DESC LIMIT 1",
        )
        .fetch_optional(p)
        .await
        })?)
    }

    /// When the standby in force began (unix ms), if the newest switch is to `standby`.
    pub async fn standby_since(&self) -> Result<Option<i64>> {
        Ok(on!(self.db(), |p| sqlx::query_scalar(
            "SELECT at FROM mode_switches WHERE id = (SELECT MAX(id) FROM mode_switches) AND to_mode = 'standby'",
        )
        .fetch_optional(p)
        .await)?)
    }

    /// Switch history, oldest first.
    pub async fn switches(&self) -> Result<Vec<Switch>> {
        let rows: Vec<(Option<String>, String, i64, String)> = on!(self.db(), |p| sqlx::query_as(
            "SELECT from_mode, to_mode, at, reason FROM mode_switches ORDER BY id"
        )
        .fetch_all(p)
        .await)?;
        Ok(rows
            .into_iter()
            .map(|(from_mode, to_mode, at, reason)| Switch {
                from_mode,
                to_mode,
                at,
                reason,
            })
            .collect())
    }

    /// Announcements not yet posted, oldest first.
    pub async fn pending_announcements(&self) -> Result<Vec<PendingAnnouncement>> {
        let rows: Vec<(i64, String, String)> = on!(self.db(), |p| sqlx::query_as(
            "SELECT switch_id, target, kind FROM announcements WHERE done_at IS NULL ORDER BY switch_id, target",
        )
        .fetch_all(p)
        .await)?;
        Ok(rows
            .into_iter()
            .map(|(switch_id, target, kind)| PendingAnnouncement {
                switch_id,
                target,
                kind,
            })
            .collect())
    }

    /// Record an announcement as posted (`tg_msg_id`: its Telegram message, to unpin later), or
    /// as given up on.
    pub async fn announcement_done(&self, switch_id: i64, target: &str, tg_msg_id: Option<i32>) -> Result<()> {
        let r = on!(self.db(), |p| sqlx::query(
            "UPDATE announcements SET done_at = $1, tg_msg_id = $2 WHERE switch_id = $3 AND target = $4"
        )
        .bind(now_ms())
        .bind(tg_msg_id)
        .bind(switch_id)
        .bind(target)
        .execute(p)
        .await
        .map(|_| ()));
        self.noted(r)
    }

    /// Telegram messages of earlier posted announcements in a chat (to unpin on rollback).
    pub async fn pinned_announcements(&self, target: &str, before_switch: i64) -> Result<Vec<i32>> {
        Ok(on!(self.db(), |p| sqlx::query_scalar(
            "SELECT tg_msg_id FROM announcements WHERE target = $1 AND switch_id < $2 AND tg_msg_id IS NOT NULL",
        )
        .bind(target)
        .bind(before_switch)
        .fetch_all(p)
        .await)?)
    }

    // ---- cross-side duplicate watch ----

    /// Remember a post of a mapped identity (a Matrix user who also posts on Telegram) on
    /// `platform` (`telegram` or `matrix`). `reference` is the post on that platform: a Telegram
    /// message id or a Matrix event id, as text (one column for both). `norm` is its normalised
    /// text, `ts` its time (unix ms); posts older than a day are forgotten.
    pub async fn watch_post(
        &self,
        platform: &str,
        reference: &str,
        identity: &UserId,
        chat: i64,
        norm: &str,
        ts: i64,
    ) -> Result<()> {
        let r = on!(self.db(), |p| sqlx::query(
            "INSERT INTO echo_watch (platform, ref, identity, tg_chat_id, norm, ts) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT DO NOTHING",
        )
        .bind(platform)
        .bind(reference)
        .bind(identity.as_str())
        .bind(chat)
        .bind(norm)
        .bind(ts)
        .execute(p)
        .await
        .map(|_| ()));
        self.noted(r)?;
        let r = on!(self.db(), |p| sqlx::query("DELETE FROM echo_watch WHERE ts < $1")
            .bind(now_ms() - 86_400_000)
            .execute(p)
            .await
            .map(|_| ()));
        self.noted(r)
    }

    /// A post of the same identity and text on `platform` within `window_ms` of `ts`: its
    /// `reference` (see [`Store::watch_post`]).
    pub async fn find_watched(
        &self,
        platform: &str,
        identity: &UserId,
        chat: i64,
        norm: &str,
        ts: i64,
        window_ms: i64,
    ) -> Result<Option<String>> {
        Ok(on!(self.db(), |p| sqlx::query_scalar(
            "SELECT ref FROM echo_watch WHERE platform = $1 AND identity = $2 AND tg_chat_id = $3 AND norm = $4
             AND ts BETWEEN $5 AND $6 ORDER BY ts LIMIT 1",
        )
        .bind(platform)
        .bind(identity.as_str())
        .bind(chat)
        .bind(norm)
        .bind(ts - window_ms)
        .bind(ts + window_ms)
        .fetch_optional(p)
        .await)?)
    }
}
