//! What `tgmx audit` and `tgmx status` read: the `failures` table (what was not carried, or
//! carried in part or maybe twice), latencies and counts from `messages`, and what waits in
//! `tg_inbox` / `mx_inbox`.

use ruma::{OwnedUserId, UserId};

use super::{Direction, Store, dialect, direction_of, now_ms};
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
    /// Not carried because the configuration says so (a forum topic without a room, in a forum
    /// bridged by topic rooms only): listed, not counted as a loss.
    Ignored,
}

impl Shortfall {
    /// From the row's `source_ref`, whose prefix names the kind.
    pub fn of(source_ref: &str) -> Shortfall {
        if source_ref.starts_with("possible-repeat:") {
            Shortfall::MayRepeat
        } else if source_ref.starts_with("ignored:") {
            Shortfall::Ignored
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
            Shortfall::Ignored => "IGNORED (config)",
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
        let rows: Vec<(String, String, String, i64)> = on!(self.db(), |p| sqlx::query_as(
            "SELECT direction, source_ref, reason, at FROM failures WHERE at >= $1 ORDER BY id"
        )
        .bind(since_ms)
        .fetch_all(p)
        .await)?;
        rows.into_iter()
            .map(|(direction, source_ref, reason, at)| {
                Ok(Failure {
                    direction: direction_of("failures", &direction)?,
                    source_ref,
                    reason,
                    at,
                })
            })
            .collect()
    }

    /// Bridge latencies (ms, bridged_at - sent_at) of messages bridged since `since_ms`.
    pub async fn latencies_since(&self, direction: Direction, since_ms: i64) -> Result<Vec<i64>> {
        Ok(on!(self.db(), |p, pg| sqlx::query_scalar(dialect(
            pg,
            "SELECT MAX(bridged_at - sent_at, 0) FROM messages WHERE direction = $1 AND bridged_at >= $2",
            "SELECT GREATEST(bridged_at - sent_at, 0) FROM messages WHERE direction = $1 AND bridged_at >= $2",
        ))
        .bind(direction)
        .bind(since_ms)
        .fetch_all(p)
        .await)?)
    }

    /// Messages of one chat bridged since `since_ms` in one direction.
    pub async fn count_chat_since(&self, chat: i64, direction: Direction, since_ms: i64) -> Result<i64> {
        Ok(on!(self.db(), |p| sqlx::query_scalar(
            "SELECT COUNT(*) FROM messages WHERE tg_chat_id = $1 AND direction = $2 AND bridged_at >= $3",
        )
        .bind(chat)
        .bind(direction)
        .bind(since_ms)
        .fetch_one(p)
        .await)?)
    }

    /// When `sender` (a Matrix user, puppet or real) last had a message bridged.
    pub async fn last_message_by(&self, sender: &UserId) -> Result<Option<i64>> {
        Ok(on!(self.db(), |p| sqlx::query_scalar(
            "SELECT MAX(bridged_at) FROM messages WHERE sender = $1"
        )
        .bind(sender.as_str())
        .fetch_one(p)
        .await)?)
    }

    /// What waits in the inboxes.
    pub async fn pending(&self) -> Result<Pending> {
        let (tg, tg_oldest): (i64, Option<i64>) = on!(self.db(), |p| sqlx::query_as(
            "SELECT COUNT(*), MIN(received_at) FROM tg_inbox"
        )
        .fetch_one(p)
        .await)?;
        let (mx, mx_oldest): (i64, Option<i64>) = on!(self.db(), |p| sqlx::query_as(
            "SELECT COUNT(*), MIN(received_at) FROM mx_inbox"
        )
        .fetch_one(p)
        .await)?;
        let oldest = match (tg_oldest, mx_oldest) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Ok(Pending { tg, mx, oldest })
    }

    // ---- failures ----

    /// Whether anything was ever bridged or recorded as not bridged.
    pub async fn has_traffic(&self) -> Result<bool> {
        Ok(on!(self.db(), |p| sqlx::query_scalar(
            "SELECT EXISTS(SELECT 1 FROM messages) OR EXISTS(SELECT 1 FROM failures)"
        )
        .fetch_one(p)
        .await)?)
    }

    /// Record a shortfall for `tgmx audit` (`source_ref` as in [`Failure::source_ref`]).
    pub async fn record_failure(&self, direction: Direction, source_ref: &str, reason: &str) -> Result<()> {
        let r = on!(self.db(), |p| sqlx::query(
            "INSERT INTO failures (direction, source_ref, reason, at) VALUES ($1, $2, $3, $4)"
        )
        .bind(direction)
        .bind(source_ref)
        .bind(reason)
        .bind(now_ms())
        .execute(p)
        .await
        .map(|_| ()));
        self.noted(r)
    }
}

// ---- readiness gates (`message_files`, `rollcalls`, `rollcall_answers`) ----

/// A file that crossed and was delivered (a row of `message_files` with its `messages` row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCrossed {
    /// `voice`, `file`, ...
    pub kind: String,
    /// The Telegram chat it crossed from or to.
    pub tg_chat_id: i64,
    /// The Matrix room it crossed from or to.
    pub mx_room_id: String,
    /// When it was delivered (unix ms).
    pub bridged_at: i64,
}

/// One agent's answer to a rollcall.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollcallAnswer {
    /// The agent, as listed in `fleet.agents`.
    pub agent: OwnedUserId,
    /// Answered on Telegram (its post reached the room through the bridge), else on Matrix.
    pub on_telegram: bool,
    /// How long after the question (ms).
    pub after_ms: i64,
}

/// A rollcall as recorded: when, where, how many agents were called, who answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollcall {
    /// When it was asked (unix ms).
    pub at: i64,
    /// The room it was asked in (as given: alias or id).
    pub room: String,
    /// The Telegram chat it was asked in too, if it was.
    pub tg_chat_id: Option<i64>,
    /// How many agents were called.
    pub agents: i64,
    /// How long answers were waited for.
    pub timeout_secs: i64,
    /// Who answered, in the order they did.
    pub answers: Vec<RollcallAnswer>,
}

impl Store {
    /// Note that the message `source` (`tg:<chat>:<msg>` or a Matrix event id) carries a file of
    /// `kind` across in `direction`. It counts for `tgmx status` once the message is delivered.
    pub async fn note_file(&self, direction: Direction, source: &str, kind: &str) -> Result<()> {
        let r = on!(self.db(), |p| sqlx::query(
            "INSERT INTO message_files (direction, source, kind, at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (direction, source) DO UPDATE SET kind = excluded.kind, at = excluded.at"
        )
        .bind(direction)
        .bind(source)
        .bind(kind)
        .bind(now_ms())
        .execute(p)
        .await
        .map(|_| ()));
        self.noted(r)
    }

    /// The last voice message or file (a document) delivered in `direction` since `since_ms`.
    pub async fn last_voice_or_file(&self, direction: Direction, since_ms: i64) -> Result<Option<FileCrossed>> {
        let sql = match direction {
            Direction::TgToMx => {
                "SELECT f.kind, m.tg_chat_id, m.mx_room_id, m.bridged_at FROM messages m
                 JOIN message_files f
                   ON f.direction = m.direction AND f.source = 'tg:' || m.tg_chat_id || ':' || m.tg_msg_id
                 WHERE m.direction = $1 AND m.bridged_at >= $2 AND f.kind IN ('voice', 'file')
                 ORDER BY m.bridged_at DESC LIMIT 1"
            }
            Direction::MxToTg => {
                "SELECT f.kind, m.tg_chat_id, m.mx_room_id, m.bridged_at FROM messages m
                 JOIN message_files f ON f.direction = m.direction AND f.source = m.mx_event_id
                 WHERE m.direction = $1 AND m.bridged_at >= $2 AND f.kind IN ('voice', 'file')
                 ORDER BY m.bridged_at DESC LIMIT 1"
            }
        };
        Ok(on!(self.db(), |p| sqlx::query_as::<_, (String, i64, String, i64)>(sql)
            .bind(direction)
            .bind(since_ms)
            .fetch_optional(p)
            .await)?
        .map(|(kind, tg_chat_id, mx_room_id, bridged_at)| FileCrossed {
            kind,
            tg_chat_id,
            mx_room_id,
            bridged_at,
        }))
    }

    /// The Matrix events `sender` posted that crossed to Telegram, newest first (room, event).
    pub async fn crossed_to_telegram_by(&self, sender: &UserId, limit: i64) -> Result<Vec<(String, String, i64)>> {
        Ok(on!(self.db(), |p| sqlx::query_as(
            "SELECT mx_room_id, mx_event_id, bridged_at FROM messages
             WHERE direction = 'mx_to_tg' AND sender = $1 ORDER BY bridged_at DESC LIMIT $2",
        )
        .bind(sender.as_str())
        .bind(limit)
        .fetch_all(p)
        .await)?)
    }

    /// Keep a rollcall's outcome.
    pub async fn record_rollcall(&self, r: &Rollcall) -> Result<()> {
        self.write(false, async |tx| {
            let id: i64 = on!(tx.db(), |c| sqlx::query_scalar(
                "INSERT INTO rollcalls (at, room, tg_chat_id, agents, timeout_secs) VALUES ($1, $2, $3, $4, $5) RETURNING id",
            )
            .bind(r.at)
            .bind(&r.room)
            .bind(r.tg_chat_id)
            .bind(r.agents)
            .bind(r.timeout_secs)
            .fetch_one(c)
            .await)?;
            for a in &r.answers {
                on!(tx.db(), |c| sqlx::query(
                    "INSERT INTO rollcall_answers (rollcall_id, agent, side, after_ms) VALUES ($1, $2, $3, $4)
                     ON CONFLICT DO NOTHING"
                )
                .bind(id)
                .bind(a.agent.as_str())
                .bind(if a.on_telegram { "telegram" } else { "matrix" })
                .bind(a.after_ms)
                .execute(c)
                .await
                .map(|_| ()))?;
            }
            Ok(())
        })
        .await
    }

    /// The last rollcall kept, if any.
    pub async fn last_rollcall(&self) -> Result<Option<Rollcall>> {
        let Some((id, at, room, tg_chat_id, agents, timeout_secs)) = on!(self.db(), |p| sqlx::query_as::<
            _,
            (i64, i64, String, Option<i64>, i64, i64),
        >(
            "SELECT id, at, room, tg_chat_id, agents, timeout_secs FROM rollcalls ORDER BY id DESC LIMIT 1",
        )
        .fetch_optional(p)
        .await)?
        else {
            return Ok(None);
        };
        let rows: Vec<(String, String, i64)> = on!(self.db(), |p| sqlx::query_as(
            "SELECT agent, side, after_ms FROM rollcall_answers WHERE rollcall_id = $1 ORDER BY after_ms",
        )
        .bind(id)
        .fetch_all(p)
        .await)?;
        let answers = rows
            .into_iter()
            .map(|(agent, side, after_ms)| {
                Ok(RollcallAnswer {
                    agent: super::parse_id("rollcall_answers.agent", agent)?,
                    on_telegram: side == "telegram",
                    after_ms,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Some(Rollcall {
            at,
            room,
            tg_chat_id,
            agents,
            timeout_secs,
            answers,
        }))
    }
}

impl Store {
    /// When the oldest item waiting in one inbox arrived (unix ms): `TgToMx` the Telegram
    /// updates, `MxToTg` the Matrix events.
    pub async fn oldest_waiting(&self, direction: Direction) -> Result<Option<i64>> {
        let sql = match direction {
            Direction::TgToMx => "SELECT MIN(received_at) FROM tg_inbox",
            Direction::MxToTg => "SELECT MIN(received_at) FROM mx_inbox",
        };
        Ok(on!(self.db(), |p| sqlx::query_scalar(sql).fetch_one(p).await)?)
    }
}

#[cfg(test)]
mod readiness_tests {
    use super::*;
    use crate::storage::temp_store as store;
    use crate::storage::testing::both_backends;
    use crate::telegram::Place;

    use ruma::{event_id, room_id, user_id};

    both_backends! {
        /// A file counts once its message is delivered, in its own direction, and only a voice
        /// message or a document.
        async fn a_file_counts_once_delivered_and_only_voice_or_document() {
            let (s, _d) = store().await;
            let room = room_id!("!r:x");
            let since = now_ms() - 60_000;
            s.note_file(Direction::TgToMx, "tg:-100:7", "voice").await.unwrap();
            s.note_file(Direction::MxToTg, "$img", "image").await.unwrap();
            s.note_file(Direction::MxToTg, "$doc", "file").await.unwrap();
            // Noted, not delivered yet.
            assert_eq!(s.last_voice_or_file(Direction::TgToMx, since).await.unwrap(), None);
            s.link_message(
                Place::chat(-100),
                7,
                room,
                event_id!("$v"),
                Direction::TgToMx,
                user_id!("@p:x"),
                1,
                None,
            )
            .await
            .unwrap();
            s.link_message(
                Place::chat(-100),
                8,
                room,
                event_id!("$img"),
                Direction::MxToTg,
                user_id!("@e:x"),
                1,
                None,
            )
            .await
            .unwrap();
            let got = s.last_voice_or_file(Direction::TgToMx, since).await.unwrap().unwrap();
            assert_eq!(
                (got.kind.as_str(), got.tg_chat_id, got.mx_room_id.as_str()),
                ("voice", -100, "!r:x")
            );
            // An image is not a file; the document is not delivered yet.
            assert_eq!(s.last_voice_or_file(Direction::MxToTg, since).await.unwrap(), None);
            s.link_message(
                Place::chat(-100),
                9,
                room,
                event_id!("$doc"),
                Direction::MxToTg,
                user_id!("@e:x"),
                1,
                None,
            )
            .await
            .unwrap();
            let got = s.last_voice_or_file(Direction::MxToTg, since).await.unwrap().unwrap();
            assert_eq!(got.kind, "file");
            // Older than the window: not counted.
            assert_eq!(
                s.last_voice_or_file(Direction::MxToTg, now_ms() + 60_000)
                    .await
                    .unwrap(),
                None
            );
        }
    }

    both_backends! {
        async fn the_last_rollcall_is_kept_with_its_answers() {
            let (s, _d) = store().await;
            assert_eq!(s.last_rollcall().await.unwrap(), None);
            let answer = |agent: &str, on_telegram, after_ms| RollcallAnswer {
                agent: OwnedUserId::try_from(agent).unwrap(),
                on_telegram,
                after_ms,
            };
            let first = Rollcall {
                at: 1,
                room: "#ops:x".into(),
                tg_chat_id: None,
                agents: 2,
                timeout_secs: 60,
                answers: vec![answer("@a:x", false, 900)],
            };
            s.record_rollcall(&first).await.unwrap();
            let second = Rollcall {
                at: 2,
                tg_chat_id: Some(-100),
                answers: vec![answer("@b:x", true, 400), answer("@a:x", false, 1200)],
                ..first.clone()
            };
            s.record_rollcall(&second).await.unwrap();
            assert_eq!(s.last_rollcall().await.unwrap(), Some(second));
        }
    }
}
