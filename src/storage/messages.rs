//! The message map (`messages`: which Telegram message is which Matrix event), send intents
//! (`tg_send_intents`: a Telegram post that may have happened), and reactions (`reactions`).

use ruma::{EventId, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId};

use super::{Direction, Store, dialect, direction_of, now_ms, parse_id};
use crate::error::Result;

/// One row of the message map. Read back, an id that does not parse (or an unknown direction)
/// is an error naming the column.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageLink {
    /// The Telegram chat of the message.
    pub tg_chat_id: i64,
    /// The Telegram message.
    pub tg_msg_id: i32,
    /// The forum topic the Telegram message is in, if known.
    pub tg_thread_id: Option<i32>,
    /// The Matrix room of the event (the chat's portal when it was bridged).
    pub mx_room_id: OwnedRoomId,
    /// The Matrix event.
    pub mx_event_id: OwnedEventId,
    /// Which side it was posted on first: the other holds the bridged copy.
    pub direction: Direction,
    /// Who posted it, as a Matrix user (a puppet for a Telegram user, or a real Matrix user):
    /// only its sender's edits are carried.
    pub sender: OwnedUserId,
}

/// What a removed reaction was on (a row of `reactions`, as deleted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemovedReaction {
    /// The Telegram chat of the message reacted to.
    pub tg_chat_id: i64,
    /// The Telegram message reacted to.
    pub tg_msg_id: i32,
    /// Which side the reaction came from (a Matrix one is the bot's reaction on Telegram, which
    /// then changes).
    pub direction: Direction,
}

/// A row of `message_parts`: one part of a message too long for the other side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessagePart {
    /// The message's Matrix event (its first part's, for Telegram -> Matrix).
    pub mx_event_id: OwnedEventId,
    /// 0, 1, 2, ... in order.
    pub part: i64,
    pub tg_chat_id: i64,
    /// The Telegram message of this part (Matrix -> Telegram), or the one message
    /// (Telegram -> Matrix).
    pub tg_msg_id: i32,
    /// The Matrix event of this part (Telegram -> Matrix), or the one event (Matrix -> Telegram).
    pub part_event_id: OwnedEventId,
}

impl MessagePart {
    fn from_row((ev, part, chat, msg, part_ev): (String, i64, i64, i32, String)) -> Result<MessagePart> {
        Ok(MessagePart {
            mx_event_id: parse_id("message_parts.mx_event_id", ev)?,
            part,
            tg_chat_id: chat,
            tg_msg_id: msg,
            part_event_id: parse_id("message_parts.part_event_id", part_ev)?,
        })
    }
}

/// The columns of a `messages` row as [`Store::link_by_tg`] and [`Store::link_by_event`] select
/// them.
type LinkRow = (i64, i32, String, String, String, String, Option<i32>);

impl Store {
    // ---- message map ----

    /// Record that a Telegram message and a Matrix event are the same message (an existing link
    /// stays). A Matrix -> Telegram link also ends the event's send intent, and removes the
    /// event's Matrix inbox row `done_inbox` if given: one commit for both.
    #[allow(clippy::too_many_arguments)]
    pub async fn link_message(
        &self,
        place: crate::telegram::Place,
        tg_msg_id: i32,
        mx_room_id: &RoomId,
        mx_event_id: &EventId,
        direction: Direction,
        sender: &UserId,
        sent_at: i64,
        done_inbox: Option<i64>,
    ) -> Result<()> {
        self.write(false, async |tx| {
            on!(tx.db(), |c| sqlx::query(
                "INSERT INTO messages
                 (tg_chat_id, tg_msg_id, mx_room_id, mx_event_id, direction, sender, sent_at, bridged_at, tg_thread_id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
            )
            .bind(place.chat)
            .bind(tg_msg_id)
            .bind(mx_room_id.as_str())
            .bind(mx_event_id.as_str())
            .bind(direction)
            .bind(sender.as_str())
            .bind(sent_at)
            .bind(now_ms())
            .bind(place.topic)
            .execute(c)
            .await
            .map(|_| ()))?;
            if direction == Direction::MxToTg {
                on!(tx.db(), |c| sqlx::query(
                    "DELETE FROM tg_send_intents WHERE mx_event_id = $1"
                )
                .bind(mx_event_id.as_str())
                .execute(c)
                .await
                .map(|_| ()))?;
            }
            if let Some(seq) = done_inbox {
                on!(tx.db(), |c| sqlx::query("DELETE FROM mx_inbox WHERE seq = $1")
                    .bind(seq)
                    .execute(c)
                    .await
                    .map(|_| ()))?;
            }
            Ok(())
        })
        .await
    }

    /// Note that part `part` of `mx_event_id` (0: the first, or the whole message) is about to
    /// be sent to Telegram. Returns when an earlier attempt at the same part started (unix ms) if
    /// one did and its outcome is unknown: it may have reached Telegram. An intent left by an
    /// earlier part (recorded in `message_parts` since) is moved on to this part.
    pub async fn begin_send(&self, mx_event_id: &EventId, tg_chat_id: i64, part: i64) -> Result<Option<i64>> {
        self.write(true, async |tx| {
            let earlier: Option<(i64, i64)> = on!(tx.db(), |c| sqlx::query_as(
                "SELECT started_at, part FROM tg_send_intents WHERE mx_event_id = $1"
            )
            .bind(mx_event_id.as_str())
            .fetch_optional(c)
            .await)?;
            match earlier {
                Some((at, p)) if p >= part => Ok(Some(at)),
                _ => {
                    on!(tx.db(), |c| sqlx::query(
                        "INSERT INTO tg_send_intents (mx_event_id, tg_chat_id, started_at, part) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (mx_event_id) DO UPDATE SET started_at = excluded.started_at, part = excluded.part",
                    )
                    .bind(mx_event_id.as_str())
                    .bind(tg_chat_id)
                    .bind(now_ms())
                    .bind(part)
                    .execute(c)
                    .await
                    .map(|_| ()))?;
                    Ok(None)
                }
            }
        })
        .await
    }

    /// Record part `part` of a message carried in parts, as soon as it is sent (see
    /// `message_parts`).
    pub async fn save_part(&self, p: &MessagePart) -> Result<()> {
        let r = on!(self.db(), |pool| sqlx::query(
            "INSERT INTO message_parts (mx_event_id, part, tg_chat_id, tg_msg_id, part_event_id) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (mx_event_id, part) DO UPDATE SET \
             tg_chat_id = excluded.tg_chat_id, tg_msg_id = excluded.tg_msg_id, part_event_id = excluded.part_event_id",
        )
        .bind(p.mx_event_id.as_str())
        .bind(p.part)
        .bind(p.tg_chat_id)
        .bind(p.tg_msg_id)
        .bind(p.part_event_id.as_str())
        .execute(pool)
        .await
        .map(|_| ()));
        self.noted(r)
    }

    /// The parts of a message carried in parts, by the Matrix event of its first part (empty:
    /// carried whole, or no part sent yet).
    pub async fn parts_of_event(&self, mx_event_id: &EventId) -> Result<Vec<MessagePart>> {
        let rows: Vec<(String, i64, i64, i32, String)> = on!(self.db(), |p| sqlx::query_as(
            "SELECT mx_event_id, part, tg_chat_id, tg_msg_id, part_event_id FROM message_parts \
             WHERE mx_event_id = $1 ORDER BY part",
        )
        .bind(mx_event_id.as_str())
        .fetch_all(p)
        .await)?;
        rows.into_iter().map(MessagePart::from_row).collect()
    }

    /// Forget part `part` of a message (an edit made it shorter).
    pub async fn drop_part(&self, mx_event_id: &EventId, part: i64) -> Result<()> {
        let r = on!(self.db(), |p| sqlx::query(
            "DELETE FROM message_parts WHERE mx_event_id = $1 AND part = $2"
        )
        .bind(mx_event_id.as_str())
        .bind(part)
        .execute(p)
        .await
        .map(|_| ()));
        self.noted(r)
    }

    /// The parts of a message carried in parts, by its Telegram message.
    pub async fn parts_of_tg(&self, tg_chat_id: i64, tg_msg_id: i32) -> Result<Vec<MessagePart>> {
        let rows: Vec<(String, i64, i64, i32, String)> = on!(self.db(), |p| sqlx::query_as(
            "SELECT mx_event_id, part, tg_chat_id, tg_msg_id, part_event_id FROM message_parts \
             WHERE tg_chat_id = $1 AND tg_msg_id = $2 ORDER BY part",
        )
        .bind(tg_chat_id)
        .bind(tg_msg_id)
        .fetch_all(p)
        .await)?;
        rows.into_iter().map(MessagePart::from_row).collect()
    }

    /// An attempt that certainly sent nothing (Telegram answered with an error): forget it.
    pub async fn forget_send(&self, mx_event_id: &EventId) -> Result<()> {
        let r = on!(self.db(), |p| sqlx::query(
            "DELETE FROM tg_send_intents WHERE mx_event_id = $1"
        )
        .bind(mx_event_id.as_str())
        .execute(p)
        .await
        .map(|_| ()));
        self.noted(r)
    }

    /// A row of `messages` (columns as selected by the queries below).
    fn link_from_row(
        (tg_chat_id, tg_msg_id, room, event, direction, sender, tg_thread_id): LinkRow,
    ) -> Result<MessageLink> {
        Ok(MessageLink {
            tg_chat_id,
            tg_msg_id,
            mx_room_id: parse_id("messages.mx_room_id", room)?,
            mx_event_id: parse_id("messages.mx_event_id", event)?,
            direction: direction_of("messages", &direction)?,
            sender: parse_id("messages.sender", sender)?,
            tg_thread_id,
        })
    }

    /// The link of a Telegram message, if it was bridged.
    pub async fn link_by_tg(&self, tg_chat_id: i64, tg_msg_id: i32) -> Result<Option<MessageLink>> {
        let row: Option<LinkRow> = on!(self.db(), |p| sqlx::query_as(
            "SELECT tg_chat_id, tg_msg_id, mx_room_id, mx_event_id, direction, sender, tg_thread_id FROM messages
             WHERE tg_chat_id = $1 AND tg_msg_id = $2",
        )
        .bind(tg_chat_id)
        .bind(tg_msg_id)
        .fetch_optional(p)
        .await)?;
        row.map(Self::link_from_row).transpose()
    }

    /// The link of a Matrix event, if it was bridged.
    pub async fn link_by_event(&self, mx_event_id: &EventId) -> Result<Option<MessageLink>> {
        let row: Option<LinkRow> = on!(self.db(), |p| sqlx::query_as(
            "SELECT tg_chat_id, tg_msg_id, mx_room_id, mx_event_id, direction, sender, tg_thread_id FROM messages
             WHERE mx_event_id = $1",
        )
        .bind(mx_event_id.as_str())
        .fetch_optional(p)
        .await)?;
        row.map(Self::link_from_row).transpose()
    }

    // ---- reactions ----

    /// The Matrix event of a reaction (`emoji` by `reactor`, a Telegram user id or a Matrix user)
    /// on a Telegram message, if it is standing.
    pub async fn reaction(&self, chat: i64, msg: i32, reactor: &str, emoji: &str) -> Result<Option<OwnedEventId>> {
        on!(self.db(), |p| sqlx::query_scalar::<_, String>(
            "SELECT mx_event_id FROM reactions WHERE tg_chat_id = $1 AND tg_msg_id = $2 AND reactor = $3 AND emoji = $4",
        )
        .bind(chat)
        .bind(msg)
        .bind(reactor)
        .bind(emoji)
        .fetch_optional(p)
        .await)?
        .map(|e| parse_id("reactions.mx_event_id", e))
        .transpose()
    }

    /// Record a reaction (`emoji` by `reactor`, see [`Store::reaction`]) and its Matrix event.
    /// It becomes the newest (see [`Store::latest_mx_reaction`]), also when it replaces one.
    pub async fn save_reaction(
        &self,
        chat: i64,
        msg: i32,
        reactor: &str,
        emoji: &str,
        mx_event: &EventId,
        direction: Direction,
    ) -> Result<()> {
        let r = on!(self.db(), |p, pg| sqlx::query(dialect(
            pg,
            "INSERT OR REPLACE INTO reactions (tg_chat_id, tg_msg_id, reactor, emoji, mx_event_id, direction) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            "INSERT INTO reactions (tg_chat_id, tg_msg_id, reactor, emoji, mx_event_id, direction) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tg_chat_id, tg_msg_id, reactor, emoji) DO UPDATE SET \
             mx_event_id = excluded.mx_event_id, direction = excluded.direction, seq = DEFAULT",
        ))
        .bind(chat)
        .bind(msg)
        .bind(reactor)
        .bind(emoji)
        .bind(mx_event.as_str())
        .bind(direction)
        .execute(p)
        .await
        .map(|_| ()));
        self.noted(r)
    }

    /// Forget a reaction by its Matrix event; returns what it was on, if it was known.
    pub async fn delete_reaction(&self, mx_event: &EventId) -> Result<Option<RemovedReaction>> {
        let row: Option<(i64, i32, String)> = on!(self.db(), |p| sqlx::query_as(
            "DELETE FROM reactions WHERE mx_event_id = $1 RETURNING tg_chat_id, tg_msg_id, direction"
        )
        .bind(mx_event.as_str())
        .fetch_optional(p)
        .await)?;
        let Some((tg_chat_id, tg_msg_id, direction)) = row else {
            return Ok(None);
        };
        Ok(Some(RemovedReaction {
            tg_chat_id,
            tg_msg_id,
            direction: direction_of("reactions", &direction)?,
        }))
    }

    /// The newest Matrix-side reaction still standing on a Telegram message.
    pub async fn latest_mx_reaction(&self, chat: i64, msg: i32) -> Result<Option<String>> {
        Ok(on!(self.db(), |p, pg| sqlx::query_scalar(dialect(
            pg,
            "SELECT emoji FROM reactions WHERE tg_chat_id = $1 AND tg_msg_id = $2 AND direction = 'mx_to_tg' \
             ORDER BY rowid DESC LIMIT 1",
            "SELECT emoji FROM reactions WHERE tg_chat_id = $1 AND tg_msg_id = $2 AND direction = 'mx_to_tg' \
             ORDER BY seq DESC LIMIT 1",
        ))
        .bind(chat)
        .bind(msg)
        .fetch_optional(p)
        .await)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::temp_store as store;
    use crate::storage::testing::both_backends;

    use ruma::{event_id, room_id, user_id};

    both_backends! {
        async fn message_links_both_ways() {
            let (s, _d) = store().await;
            let (room, ev, sender) = (room_id!("!r:x"), event_id!("$e"), user_id!("@u:x"));
            s.link_message(
                crate::telegram::Place::chat(-100),
                7,
                room,
                ev,
                Direction::TgToMx,
                sender,
                1,
                None,
            )
            .await
            .unwrap();
            let link = s.link_by_event(ev).await.unwrap().unwrap();
            assert_eq!(
                link,
                MessageLink {
                    tg_chat_id: -100,
                    tg_msg_id: 7,
                    tg_thread_id: None,
                    mx_room_id: room.to_owned(),
                    mx_event_id: ev.to_owned(),
                    direction: Direction::TgToMx,
                    sender: sender.to_owned(),
                }
            );
            assert_eq!(s.link_by_tg(-100, 7).await.unwrap().unwrap().mx_event_id, ev);
            assert!(s.link_by_tg(-100, 8).await.unwrap().is_none());
            // Stored as the same TEXT as before the type.
            let stored = s.test_strings("SELECT direction FROM messages").await;
            assert_eq!(stored, ["tg_to_mx"]);
        }
    }

    both_backends! {
        /// A stored id that does not parse (not written by this bridge) is an error naming the
        /// column, and not a transient one (it would be retried forever).
        async fn a_bad_stored_id_is_an_error_naming_the_column() {
            let (s, _d) = store().await;
            s.test_exec(
                "INSERT INTO messages (tg_chat_id, tg_msg_id, mx_room_id, mx_event_id, direction, sender, sent_at, bridged_at)
                 VALUES (1, 2, 'not a room', '$e', 'mx_to_tg', '@u:x', 0, 0)",
            )
            .await;
            let e = s.link_by_tg(1, 2).await.unwrap_err();
            assert!(e.to_string().contains("messages.mx_room_id"), "{e}");
            assert!(!e.is_transient());
        }
    }

    both_backends! {
        async fn removed_reactions_say_what_they_were_on() {
            let (s, _d) = store().await;
            s.save_reaction(5, 6, "@u:x", "👍", event_id!("$r"), Direction::MxToTg)
                .await
                .unwrap();
            assert_eq!(
                s.reaction(5, 6, "@u:x", "👍").await.unwrap().as_deref(),
                Some(event_id!("$r"))
            );
            assert_eq!(s.latest_mx_reaction(5, 6).await.unwrap().as_deref(), Some("👍"));
            assert_eq!(
                s.delete_reaction(event_id!("$r")).await.unwrap(),
                Some(RemovedReaction {
                    tg_chat_id: 5,
                    tg_msg_id: 6,
                    direction: Direction::MxToTg
                })
            );
            assert_eq!(s.delete_reaction(event_id!("$r")).await.unwrap(), None);
        }
    }
}
