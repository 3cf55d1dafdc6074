//! Work received and not yet bridged. Matrix: accepted appservice transactions
//! (`mx_transactions`), events seen (`mx_seen`), and the inbox (`mx_inbox`). Telegram: the inbox
//! (`tg_inbox`) and the update offset (`kv` key `tg_offset`).

use ruma::{EventId, OwnedEventId, OwnedRoomId, RoomId, TransactionId};

use super::{Store, WriteTx, dialect, now_ms};
use crate::error::Result;

/// A Matrix event as received.
#[derive(Debug, Clone)]
pub struct MxEvent {
    /// Its room: the lane it is bridged in. `None` when it has none, or one that is not a room id
    /// (stored as `''`, one lane for all such events).
    pub room: Option<OwnedRoomId>,
    /// Its id, by which a repeat is recognised. `None` when it has none, or one that is not an
    /// event id (such an event is never taken for a repeat).
    pub event_id: Option<OwnedEventId>,
    /// `origin_server_ts`, when present.
    pub ts: Option<i64>,
    /// The event as received, bridged from the inbox.
    pub json: String,
    /// The bridge's own event coming back (see `Bridge::is_own_echo`): not stored, only noted.
    pub echo: bool,
}

impl MxEvent {
    /// The stored `room_id` of its lane (`''` for none).
    fn lane(&self) -> &str {
        self.room.as_ref().map_or("", |r| r.as_str())
    }
}

/// A Telegram update as fetched, to be stored in `tg_inbox`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TgUpdate {
    /// `update_id`: its order, and the offset to confirm once stored.
    pub update_id: i64,
    /// The chat it belongs to: its lane (`None`: updates without a chat, one lane for all).
    pub chat_id: Option<i64>,
    /// The update as sent.
    pub json: String,
}

/// A stored, not yet bridged inbox item.
#[derive(Debug, Clone)]
pub struct InboxItem {
    /// `mx_inbox.seq` or `tg_inbox.update_id`: what marks it done.
    pub key: i64,
    /// The event or update as received.
    pub json: String,
}

/// Rows of `(key, json)` as inbox items.
fn inbox_items(rows: Vec<(i64, String)>) -> Vec<InboxItem> {
    rows.into_iter().map(|(key, json)| InboxItem { key, json }).collect()
}

/// Record `ev` as seen inside `tx`; `false` if it was already (events without an id: always new).
async fn mark_seen(tx: &mut WriteTx, ev: &MxEvent, now: i64) -> Result<bool> {
    let Some(id) = &ev.event_id else {
        return Ok(true);
    };
    let n = on!(tx.db(), |c| sqlx::query(
        "INSERT INTO mx_seen (event_id, room_id, received_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
    )
    .bind(id.as_str())
    .bind(ev.lane())
    .bind(now)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// Inbox items fetched per batch (a literal in the queries, so SQLite keeps them prepared).
pub const BATCH: usize = 64;

/// The PostgreSQL notification channel told of every Matrix event queued (see
/// [`Store::listen_inbox`]).
const MX_INBOX_CHANNEL: &str = "tgmx_mx_inbox";

impl Store {
    // ---- appservice transactions and the Matrix inbox ----

    /// Store a transaction and its events in one database transaction (all or nothing); `false`
    /// when both its id and every event were known (a repeat).
    /// An event already seen (fetched by the catch-up before the homeserver delivered it) is
    /// not queued again, and the bridge's own echoes are not stored at all.
    pub async fn accept_transaction(&self, txn_id: &TransactionId, events: &[MxEvent]) -> Result<bool> {
        self.accept(txn_id, events, None).await
    }

    /// Queue events the bridge found itself in `room` (catch-up), as [`Store::accept_transaction`]
    /// does, unless the homeserver delivered anything for that room since `read_at` (unix ms, when
    /// the timeline was read): then an event after these in the timeline may be queued already,
    /// and appending them would bridge them out of order. Returns `false` then (read again later).
    pub async fn accept_found(
        &self,
        txn_id: &TransactionId,
        room: &RoomId,
        read_at: i64,
        events: &[MxEvent],
    ) -> Result<bool> {
        self.accept(txn_id, events, Some((room, read_at))).await
    }

    /// Both of the above: `quiet_since` is the room and time of a catch-up's read.
    async fn accept(
        &self,
        txn_id: &TransactionId,
        events: &[MxEvent],
        quiet_since: Option<(&RoomId, i64)>,
    ) -> Result<bool> {
        // IMMEDIATE: the check below and the inserts see the same state (no writer in between).
        self.write(true, async |tx| {
            if let Some((room, since)) = quiet_since {
                let delivered: Option<i32> = on!(tx.db(), |c| sqlx::query_scalar(
                    "SELECT 1 FROM mx_seen WHERE room_id = $1 AND received_at >= $2 LIMIT 1"
                )
                .bind(room.as_str())
                .bind(since)
                .fetch_optional(c)
                .await)?;
                if delivered.is_some() {
                    return Ok(false);
                }
            }
            let now = now_ms();
            let inserted = on!(tx.db(), |c| sqlx::query(
                "INSERT INTO mx_transactions (txn_id, received_at) VALUES ($1, $2) ON CONFLICT DO NOTHING"
            )
            .bind(txn_id.as_str())
            .bind(now)
            .execute(c)
            .await
            .map(|r| r.rows_affected()))?;
            // A known transaction id is no reason to drop events: Synapse on SQLite numbers its
            // transactions from 1 again after a restart. Events are deduplicated by their ids, so
            // a real repeat stores nothing.
            let mut queued = 0;
            for ev in events.iter().filter(|e| !e.echo) {
                if !mark_seen(tx, ev, now).await? {
                    tracing::info!(event_id = ?ev.event_id, "event already received; ignored");
                    continue;
                }
                queued += 1;
                on!(tx.db(), |c| sqlx::query(
                    "INSERT INTO mx_inbox (txn_id, room_id, event_json, received_at) VALUES ($1, $2, $3, $4)"
                )
                .bind(txn_id.as_str())
                .bind(ev.lane())
                .bind(&ev.json)
                .bind(now)
                .execute(c)
                .await
                .map(|_| ()))?;
            }
            // PostgreSQL: tell every instance of an active/standby pair (the active one may not be
            // the one the homeserver delivered to; see `Store::listen_inbox`). Sent on commit.
            if queued > 0
                && let super::Db::Postgres(c) = tx.db()
            {
                sqlx::query("SELECT pg_notify($1, '')")
                    .bind(MX_INBOX_CHANNEL)
                    .execute(c)
                    .await?;
            }
            Ok(inserted > 0 || queued > 0)
        })
        .await
    }

    /// Record an event the bridge found itself; `false` if it was seen already.
    pub async fn mark_seen(&self, ev: &MxEvent) -> Result<bool> {
        self.write(false, async |tx| mark_seen(tx, ev, now_ms()).await).await
    }

    /// Which of these event ids were never seen.
    pub async fn unseen(&self, event_ids: &[&EventId]) -> Result<Vec<OwnedEventId>> {
        let mut out = Vec::new();
        for id in event_ids {
            let seen: Option<i32> = on!(self.db(), |p| sqlx::query_scalar(
                "SELECT 1 FROM mx_seen WHERE event_id = $1"
            )
            .bind(id.as_str())
            .fetch_optional(p)
            .await)?;
            if seen.is_none() {
                out.push((*id).to_owned());
            }
        }
        Ok(out)
    }

    /// When the bridge first saw an event of this room (events before that are history).
    pub async fn first_seen_in(&self, room: &RoomId) -> Result<Option<i64>> {
        Ok(on!(self.db(), |p| sqlx::query_scalar(
            "SELECT MIN(received_at) FROM mx_seen WHERE room_id = $1"
        )
        .bind(room.as_str())
        .fetch_one(p)
        .await)?)
    }

    /// Forget seen event ids and transaction ids older than `max_age_ms`.
    pub async fn prune_seen(&self, max_age_ms: i64) -> Result<u64> {
        let before = now_ms() - max_age_ms;
        let r = on!(self.db(), |p| sqlx::query(
            "DELETE FROM mx_transactions WHERE received_at < $1"
        )
        .bind(before)
        .execute(p)
        .await
        .map(|r| r.rows_affected()));
        self.noted(r)?;
        // An intent that old belongs to an event given up on (a permanent failure).
        let r = on!(self.db(), |p| sqlx::query(
            "DELETE FROM tg_send_intents WHERE started_at < $1"
        )
        .bind(before)
        .execute(p)
        .await
        .map(|r| r.rows_affected()));
        self.noted(r)?;
        let r = on!(self.db(), |p| sqlx::query("DELETE FROM mx_seen WHERE received_at < $1")
            .bind(before)
            .execute(p)
            .await
            .map(|r| r.rows_affected()));
        self.noted(r)
    }

    /// Rooms with Matrix events waiting (each is bridged by its own ordered worker; `None`: the
    /// lane of events without a room). A stored room that is not a room id (written by an earlier
    /// version, which stored what the homeserver sent as it was) is left out with a warning: such
    /// events stay in the inbox, counted as waiting, until removed by hand.
    pub async fn mx_lanes(&self) -> Result<Vec<Option<OwnedRoomId>>> {
        let rooms: Vec<String> = on!(self.db(), |p| sqlx::query_scalar(
            "SELECT DISTINCT room_id FROM mx_inbox"
        )
        .fetch_all(p)
        .await)?;
        Ok(rooms
            .into_iter()
            .filter_map(|r| match r.as_str() {
                "" => Some(None),
                _ => match OwnedRoomId::try_from(r) {
                    Ok(room) => Some(Some(room)),
                    Err(e) => {
                        tracing::warn!(
                            "mx_inbox.room_id holds a value that is not a room id ({e}); its events are left waiting"
                        );
                        None
                    }
                },
            })
            .collect())
    }

    /// The next [`BATCH`] waiting events of one room (`None`: of events without one), in
    /// arrival order.
    pub async fn next_mx_lane(&self, room: Option<&RoomId>) -> Result<Vec<InboxItem>> {
        let rows = on!(self.db(), |p| sqlx::query_as(
            "SELECT seq, event_json FROM mx_inbox WHERE room_id = $1 ORDER BY seq LIMIT 64"
        )
        .bind(room.map_or("", RoomId::as_str))
        .fetch_all(p)
        .await)?;
        Ok(inbox_items(rows))
    }

    /// Remove several events at once (a standby's backlog posted as one digest): all or none.
    pub async fn done_mx_inbox_all(&self, seqs: &[i64]) -> Result<()> {
        self.write(false, async |tx| {
            for seq in seqs {
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

    /// Every waiting event of one room, in arrival order (the backlog of a standby).
    pub async fn mx_lane_all(&self, room: &RoomId) -> Result<Vec<InboxItem>> {
        let rows = on!(self.db(), |p| sqlx::query_as(
            "SELECT seq, event_json FROM mx_inbox WHERE room_id = $1 ORDER BY seq"
        )
        .bind(room.as_str())
        .fetch_all(p)
        .await)?;
        Ok(inbox_items(rows))
    }

    /// How many Telegram updates and Matrix events wait in the inboxes (in standby: what a
    /// rollback bridges).
    pub async fn inbox_counts(&self) -> Result<(i64, i64)> {
        let tg: i64 = on!(self.db(), |p| sqlx::query_scalar("SELECT COUNT(*) FROM tg_inbox")
            .fetch_one(p)
            .await)?;
        let mx: i64 = on!(self.db(), |p| sqlx::query_scalar("SELECT COUNT(*) FROM mx_inbox")
            .fetch_one(p)
            .await)?;
        Ok((tg, mx))
    }

    /// Every waiting Matrix event, in arrival order.
    pub async fn all_mx_inbox(&self) -> Result<Vec<InboxItem>> {
        let rows = on!(self.db(), |p| sqlx::query_as(
            "SELECT seq, event_json FROM mx_inbox ORDER BY seq"
        )
        .fetch_all(p)
        .await)?;
        Ok(inbox_items(rows))
    }

    /// Remove a bridged event (by its `seq`, [`InboxItem::key`]).
    pub async fn done_mx_inbox(&self, seq: i64) -> Result<()> {
        let r = on!(self.db(), |p| sqlx::query("DELETE FROM mx_inbox WHERE seq = $1")
            .bind(seq)
            .execute(p)
            .await
            .map(|_| ()));
        self.noted(r)
    }

    // ---- Telegram inbox and offset ----

    /// Store fetched updates and advance the stored offset in one transaction. Only after this
    /// returns may the offset be confirmed to Telegram (by the next getUpdates call).
    pub async fn accept_updates(&self, updates: &[TgUpdate]) -> Result<()> {
        let Some(max) = updates.iter().map(|u| u.update_id).max() else {
            return Ok(());
        };
        self.write(false, async |tx| {
            let now = now_ms();
            for u in updates {
                on!(tx.db(), |c| sqlx::query(
                    "INSERT INTO tg_inbox (update_id, chat_id, update_json, received_at) VALUES ($1, $2, $3, $4)
                     ON CONFLICT DO NOTHING",
                )
                .bind(u.update_id)
                .bind(u.chat_id)
                .bind(&u.json)
                .bind(now)
                .execute(c)
                .await
                .map(|_| ()))?;
            }
            on!(tx.db(), |c, pg| sqlx::query(dialect(
                pg,
                "INSERT INTO kv (key, value) VALUES ('tg_offset', $1)
                 ON CONFLICT(key) DO UPDATE SET value = MAX(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))",
                "INSERT INTO kv (key, value) VALUES ('tg_offset', $1)
                 ON CONFLICT(key) DO UPDATE SET
                   value = CAST(GREATEST(CAST(kv.value AS BIGINT), CAST(excluded.value AS BIGINT)) AS TEXT)",
            ))
            .bind((max + 1).to_string())
            .execute(c)
            .await
            .map(|_| ()))?;
            Ok(())
        })
        .await
    }

    /// Chats with updates waiting (`None`: updates without a chat).
    pub async fn tg_lanes(&self) -> Result<Vec<Option<i64>>> {
        Ok(on!(self.db(), |p| sqlx::query_scalar(
            "SELECT DISTINCT chat_id FROM tg_inbox"
        )
        .fetch_all(p)
        .await)?)
    }

    /// The next [`BATCH`] waiting updates of one chat, in order.
    pub async fn next_tg_lane(&self, chat: Option<i64>) -> Result<Vec<InboxItem>> {
        let rows = on!(self.db(), |p, pg| sqlx::query_as(dialect(
            pg,
            "SELECT update_id, update_json FROM tg_inbox WHERE chat_id IS $1 ORDER BY update_id LIMIT 64",
            "SELECT update_id, update_json FROM tg_inbox WHERE chat_id IS NOT DISTINCT FROM $1
             ORDER BY update_id LIMIT 64",
        ))
        .bind(chat)
        .fetch_all(p)
        .await)?;
        Ok(inbox_items(rows))
    }

    /// The next update id to ask Telegram for (0 before the first).
    pub async fn tg_offset(&self) -> Result<i64> {
        Ok(self
            .get_kv("tg_offset")
            .await?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    /// Every waiting Telegram update, in order.
    pub async fn all_tg_inbox(&self) -> Result<Vec<InboxItem>> {
        let rows = on!(self.db(), |p| sqlx::query_as(
            "SELECT update_id, update_json FROM tg_inbox ORDER BY update_id"
        )
        .fetch_all(p)
        .await)?;
        Ok(inbox_items(rows))
    }

    /// Remove bridged updates, one commit for all of them.
    pub async fn done_tg_inbox(&self, update_ids: &[i64]) -> Result<()> {
        if update_ids.is_empty() {
            return Ok(());
        }
        let ids = serde_json::to_string(update_ids)?;
        let r = on!(self.db(), |p, pg| sqlx::query(dialect(
            pg,
            "DELETE FROM tg_inbox WHERE update_id IN (SELECT value FROM json_each($1))",
            "DELETE FROM tg_inbox WHERE update_id IN
               (SELECT CAST(value AS BIGINT) FROM json_array_elements_text(CAST($1 AS JSON)))",
        ))
        .bind(ids)
        .execute(p)
        .await
        .map(|_| ()));
        self.noted(r)
    }
}

impl Store {
    /// PostgreSQL: call `woken` each time any instance of the database queues Matrix events
    /// (the homeserver may deliver to a standby instance of an active/standby pair, which stores
    /// them for the active one). Runs until an error (the caller retries); SQLite: never returns,
    /// one daemon is the only writer and wakes its lanes itself.
    pub async fn listen_inbox(&self, woken: impl Fn()) -> Result<()> {
        let super::Db::Postgres(pool) = self.db() else {
            return std::future::pending().await;
        };
        let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
        listener.listen(MX_INBOX_CHANNEL).await?;
        loop {
            // A lost connection is re-established by the listener (notifications sent meanwhile
            // are lost: wake anyway, the lanes then read the inbox).
            listener.try_recv().await?;
            woken();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::temp_store as store;
    use crate::storage::testing::both_backends;
    use ruma::{event_id, room_id};

    fn u(update_id: i64, chat_id: Option<i64>, json: &str) -> TgUpdate {
        TgUpdate {
            update_id,
            chat_id,
            json: json.into(),
        }
    }

    fn ev(id: &str, json: &str) -> MxEvent {
        MxEvent {
            room: Some(ruma::owned_room_id!("!r:x")),
            event_id: Some(id.try_into().unwrap()),
            ts: None,
            json: json.into(),
            echo: false,
        }
    }

    both_backends! {
        async fn a_link_given_the_inbox_row_removes_it_in_the_same_commit() {
            let (s, _d) = store().await;
            s.accept_transaction("t1".into(), &[ev("$a", "{}"), ev("$b", "{}")]).await.unwrap();
            let room = ruma::room_id!("!r:x");
            let items = s.next_mx_lane(Some(room)).await.unwrap();
            let (a, b) = (items[0].key, items[1].key);
            s.begin_send(ruma::event_id!("$a"), -100, 0).await.unwrap();
            s.link_message(
                crate::telegram::Place::chat(-100),
                7,
                room,
                ruma::event_id!("$a"),
                crate::storage::Direction::MxToTg,
                ruma::user_id!("@e:x"),
                1,
                Some(a),
            )
            .await
            .unwrap();
            let left: Vec<i64> = s.next_mx_lane(Some(room)).await.unwrap().iter().map(|i| i.key).collect();
            assert_eq!(left, [b], "the linked event's row went with its link, the other stays");
            assert!(s.test_strings("SELECT mx_event_id FROM tg_send_intents").await.is_empty());
            assert!(s.link_by_event(ruma::event_id!("$a")).await.unwrap().is_some());
        }

        async fn an_event_found_by_the_catch_up_is_not_queued_again() {
            let (s, _d) = store().await;
            assert!(s.mark_seen(&ev("$late", "{}")).await.unwrap());
            assert!(!s.mark_seen(&ev("$late", "{}")).await.unwrap());
            assert_eq!(
                s.unseen(&[event_id!("$late"), event_id!("$other")]).await.unwrap(),
                [event_id!("$other")]
            );
            // Delivered at last, in a transaction with a new event.
            assert!(
                s.accept_transaction("t9".into(), &[ev("$late", "{\"late\":1}"), ev("$new", "{\"new\":1}")])
                    .await
                    .unwrap()
            );
            let items = s.all_mx_inbox().await.unwrap();
            assert_eq!(
                items.iter().map(|i| i.json.as_str()).collect::<Vec<_>>(),
                ["{\"new\":1}"]
            );
        }
    }

    both_backends! {
        async fn own_echoes_are_neither_queued_nor_recorded() {
            let (s, _d) = store().await;
            let echo = MxEvent {
                echo: true,
                ..ev("$echo", "{\"echo\":1}")
            };
            assert!(
                s.accept_transaction("t2".into(), &[echo, ev("$real", "{\"real\":1}")])
                    .await
                    .unwrap()
            );
            let items = s.all_mx_inbox().await.unwrap();
            assert_eq!(
                items.iter().map(|i| i.json.as_str()).collect::<Vec<_>>(),
                ["{\"real\":1}"]
            );
            assert_eq!(
                s.unseen(&[event_id!("$echo"), event_id!("$real")]).await.unwrap(),
                [event_id!("$echo")]
            );
        }
    }

    both_backends! {
        /// A repeated transaction stores nothing; a known transaction id with new events (Synapse on
        /// SQLite numbers transactions from 1 again after a restart) stores the new events.
        async fn repeated_transactions_are_noops_but_a_reused_id_loses_nothing() {
            let (s, _d) = store().await;
            let first = [ev("$1", "{\"a\":1}"), ev("$2", "{\"a\":2}")];
            assert!(s.accept_transaction("t1".into(), &first).await.unwrap());
            assert!(!s.accept_transaction("t1".into(), &first).await.unwrap());
            assert!(
                s.accept_transaction("t1".into(), &[ev("$3", "{\"a\":3}")])
                    .await
                    .unwrap()
            );
            let items = s.all_mx_inbox().await.unwrap();
            assert_eq!(
                items.iter().map(|i| i.json.as_str()).collect::<Vec<_>>(),
                ["{\"a\":1}", "{\"a\":2}", "{\"a\":3}"]
            );
        }
    }

    both_backends! {
        async fn offset_only_moves_forward_and_inbox_keeps_order_per_chat() {
            let (s, _d) = store().await;
            assert_eq!(s.tg_offset().await.unwrap(), 0);
            s.accept_updates(&[u(11, Some(-1), "b"), u(10, Some(-1), "a"), u(12, Some(-2), "c")])
                .await
                .unwrap();
            assert_eq!(s.tg_offset().await.unwrap(), 13);
            s.accept_updates(&[u(5, Some(-1), "old"), u(4, None, "no chat")])
                .await
                .unwrap();
            assert_eq!(s.tg_offset().await.unwrap(), 13);
            let mut lanes = s.tg_lanes().await.unwrap();
            lanes.sort();
            assert_eq!(lanes, [None, Some(-2), Some(-1)]);
            let items = s.next_tg_lane(Some(-1)).await.unwrap();
            assert_eq!(items.iter().map(|i| i.key).collect::<Vec<_>>(), [5, 10, 11]);
            assert_eq!(s.next_tg_lane(None).await.unwrap()[0].key, 4);
            s.done_tg_inbox(&[10]).await.unwrap();
            assert_eq!(s.next_tg_lane(Some(-1)).await.unwrap().len(), 2);
            s.done_tg_inbox(&[4, 5, 11, 12]).await.unwrap();
            assert!(s.all_tg_inbox().await.unwrap().is_empty());
        }
    }

    both_backends! {
        /// Events without a room share one lane (stored as `''`, as before the room was typed).
        async fn events_without_a_room_have_a_lane_of_their_own() {
            let (s, _d) = store().await;
            let none = MxEvent {
                room: None,
                ..ev("$n", "{\"n\":1}")
            };
            assert!(
                s.accept_transaction("t".into(), &[none, ev("$r", "{\"r\":1}")])
                    .await
                    .unwrap()
            );
            let mut lanes = s.mx_lanes().await.unwrap();
            lanes.sort();
            assert_eq!(lanes, [None, Some(room_id!("!r:x").to_owned())]);
            assert_eq!(s.next_mx_lane(None).await.unwrap()[0].json, "{\"n\":1}");
            assert_eq!(
                s.next_mx_lane(Some(room_id!("!r:x"))).await.unwrap()[0].json,
                "{\"r\":1}"
            );
            let stored = s.test_strings("SELECT room_id FROM mx_inbox ORDER BY seq").await;
            assert_eq!(stored, ["", "!r:x"]);
        }
    }
}
