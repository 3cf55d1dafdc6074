//! What `tgmx audit` and `tgmx status` read: the `failures` table (what was not carried, or
//! carried in part or maybe twice), latencies and counts from `messages`, and what waits in
//! `tg_inbox` / `mx_inbox`.

use futures::FutureExt;
use sqlx::Row;

use ruma::UserId;

use super::{Direction, Store, column, now_ms};
use crate::error::Result;

/// What a row of the `failures` table (what `tgmx audit` lists) says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shortfall {
    /// Not carried at all.
    NotDelivered,
    /// Carried without some part (formatting Telegram sent that the bridge cannot read, or only
    /// the text of a message that could not be read in full).
    InPart,
    /// Carried, and possibly twice: an earlier attempt may have posted it too.
    MayRepeat,
}

impl Shortfall {
    /// From the row's `source_ref`, whose prefix names the kind.
    pub fn of(source_ref: &str) -> Shortfall {
        if source_ref.starts_with("possible-repeat:") {
            Shortfall::MayRepeat
        } else if source_ref.starts_with("partly:") {
            Shortfall::InPart
        } else {
            Shortfall::NotDelivered
        }
    }

    /// The audit's line label.
    pub fn label(self) -> &'static str {
        match self {
            Shortfall::NotDelivered => "NOT DELIVERED",
            Shortfall::InPart => "CARRIED IN PART",
            Shortfall::MayRepeat => "MAY SHOW TWICE",
        }
    }
}

/// A row of `failures`: something not carried, carried in part, or maybe carried twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The way it was to be carried.
    pub direction: Direction,
    /// What it was, prefixed by the kind ([`Shortfall::of`]): `possible-repeat:<event>`,
    /// `partly:<chat>:<msg>`, `catch-up:<room>`... Not an id of either side.
    pub source_ref: String,
    /// Why, for the operator.
    pub reason: String,
    /// When (unix ms).
    pub at: i64,
}

/// What waits in the inboxes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pending {
    /// Telegram updates waiting (`tg_inbox`).
    pub tg: i64,
    /// Matrix events waiting (`mx_inbox`).
    pub mx: i64,
    /// When the oldest of either arrived (unix ms): a queue that old is stuck.
    pub oldest: Option<i64>,
}

impl Store {
    // ---- audit ----

    /// Failures recorded since `since_ms`, oldest first. A row with a direction not known is an
    /// error naming the column.
    pub async fn failures_since(&self, since_ms: i64) -> Result<Vec<Failure>> {
        let rows = sqlx::query("SELECT direction, source_ref, reason, at FROM failures WHERE at >= ? ORDER BY id")
            .bind(since_ms)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|r| {
                Ok(Failure {
                    direction: column(&r, "failures", "direction")?,
                    source_ref: r.get(1),
                    reason: r.get(2),
                    at: r.get(3),
                })
            })
            .collect()
    }

    /// Bridge latencies (ms, bridged_at - sent_at) of messages bridged since `since_ms`.
    pub async fn latencies_since(&self, direction: Direction, since_ms: i64) -> Result<Vec<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT MAX(bridged_at - sent_at, 0) FROM messages WHERE direction = ? AND bridged_at >= ?",
        )
        .bind(direction)
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Messages of one chat bridged since `since_ms` in one direction.
    pub async fn count_chat_since(&self, chat: i64, direction: Direction, since_ms: i64) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM messages WHERE tg_chat_id = ? AND direction = ? AND bridged_at >= ?",
        )
        .bind(chat)
        .bind(direction)
        .bind(since_ms)
        .fetch_one(&self.pool)
        .await?)
    }

    /// When `sender` (a Matrix user, puppet or real) last had a message bridged.
    pub async fn last_message_by(&self, sender: &UserId) -> Result<Option<i64>> {
        Ok(
            sqlx::query_scalar("SELECT MAX(bridged_at) FROM messages WHERE sender = ?")
                .bind(sender.as_str())
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// What waits in the inboxes.
    pub async fn pending(&self) -> Result<Pending> {
        let (tg, tg_oldest): (i64, Option<i64>) = sqlx::query_as("SELECT COUNT(*), MIN(received_at) FROM tg_inbox")
            .fetch_one(&self.pool)
            .await?;
        let (mx, mx_oldest): (i64, Option<i64>) = sqlx::query_as("SELECT COUNT(*), MIN(received_at) FROM mx_inbox")
            .fetch_one(&self.pool)
            .await?;
        let oldest = match (tg_oldest, mx_oldest) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Ok(Pending { tg, mx, oldest })
    }

    // ---- failures ----

    /// Whether anything was ever bridged or recorded as not bridged.
    pub async fn has_traffic(&self) -> Result<bool> {
        Ok(
            sqlx::query_scalar("SELECT EXISTS(SELECT 1 FROM messages) OR EXISTS(SELECT 1 FROM failures)")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Record a shortfall for `tgmx audit` (`source_ref` as in [`Failure::source_ref`]).
    pub async fn record_failure(&self, direction: Direction, source_ref: &str, reason: &str) -> Result<()> {
        sqlx::query("INSERT INTO failures (direction, source_ref, reason, at) VALUES (?, ?, ?, ?)")
            .bind(direction)
            .bind(source_ref)
            .bind(reason)
            .bind(now_ms())
            .execute(&self.pool)
            .map(|r| self.noted(r))
            .await?;
        Ok(())
    }
}
