//! Catch-up: bridging Matrix events the homeserver never delivered, in their place.
//!
//! Delivery to an appservice must not depend on the homeserver retrying:
//! - **Conduit** has no retry timer: after a failed delivery (the bridge was down, restarting,
//!   or not started yet) it sends the held events only when a *new* event for the appservice is
//!   queued, and then only after 30 s × tries² (Conduit `src/service/sending/mod.rs`). A message
//!   posted while the bridge was down can wait indefinitely.
//! - **Synapse** sends transactions one at a time, in order, but two races in its scheduler
//!   (synapse/appservice/scheduler.py) break that after a failed send: the appservice is marked
//!   down *in the background*, so the next transaction can go out before the failed one; and a
//!   transaction created just before the recoverer marks the appservice up is not sent until some
//!   later failure, which can be days.
//!
//! So the bridge reads the timelines itself, as the bot's device ([`crate::matrix::device`]:
//! Conduit answers `/messages` and `/context` with a 500 for an appservice request without a
//! device). Every delivered event id is recorded (`mx_seen`), and:
//! - [`Bridge::catch_up_sweep`]: right after start and then every `gateway.matrix.catch_up_secs`,
//!   each portal is read back to where the last sweep left it (a mark persisted per room,
//!   `caught_up:<room>` in `kv`; the portal's creation for a new portal). Every relayed event that
//!   was never delivered and is older than [`HELD_AFTER_MS`] (right after start: 2 s, so that
//!   whatever was sent while the bridge was down comes within seconds) is queued in timeline
//!   order, like a delivered transaction, so it takes its turn in the room's lane; not if the
//!   homeserver delivered into the room while it was read (read again, so the order holds).
//! - [`Bridge::catch_up_before`]: while a gap is likely (for twice `catch_up_secs` after start,
//!   or after the homeserver delivered old events), a room's lane asks for the events before the
//!   ones it is about to bridge; any it never received is bridged in its timeline place.
//! - [`Bridge::follow_sync`] (on by default for any homeserver but Synapse, which retries by
//!   itself): the bot's reader device follows the bridged rooms with `/sync`; when an event seen
//!   there has not been pushed [`SYNC_GRACE`] later, its room is read as the sweep reads it, so
//!   Conduit's backoff after a failed delivery delays Matrix -> Telegram by seconds, not minutes,
//!   and older held events still come first. Invites arrive this way too.
//! - [`Bridge::held_by_homeserver`]: the same reading, counted but not queued, for `tgmx audit`
//!   and `tgmx status` ("held by the homeserver").
//!
//! An event the sweep queued and the homeserver delivers later is already seen and not bridged
//! again; either way it is stored in one SQLite transaction that checks `mx_seen`, so the two
//! paths cannot double an event, and both keep timeline order.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ruma::{OwnedRoomId, RoomId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{Notify, mpsc, watch};

use super::Bridge;
use crate::error::Result;
use crate::storage::{Direction, InboxItem, MxEvent, now_ms};

/// Event types the bridge relays to Telegram (the only ones worth fetching).
const RELAYED: [&str; 5] = [
    "m.room.message",
    "m.sticker",
    "m.reaction",
    "m.room.redaction",
    "m.room.encrypted",
];
/// Event types `/sync` follows: the relayed ones, and a room turning encryption on (from then on
/// nothing may be sent into it in cleartext, even while the homeserver holds its pushes).
const FOLLOWED: [&str; 6] = [
    "m.room.message",
    "m.sticker",
    "m.reaction",
    "m.room.redaction",
    "m.room.encrypted",
    "m.room.encryption",
];
/// An event this much older than one delivered counts as skipped (clock and ordering slack).
const SLACK_MS: i64 = 2_000;
/// An event not delivered this long after it was sent is held by the homeserver: the periodic
/// sweep bridges it and `tgmx audit` reports it (younger ones are in flight).
pub const HELD_AFTER_MS: i64 = 10_000;
/// The sweep never reaches further back than this: `mx_seen` forgets event ids after 7 days,
/// and an older event could have been bridged already.
const REACH_MS: i64 = 6 * 24 * 3600 * 1000;
/// How long an event may be visible in `/sync` before the bridge stops waiting for the
/// homeserver to push it.
pub const SYNC_GRACE: Duration = Duration::from_secs(3);
/// How long one `/sync` long-polls (the client's timeout is 60 s).
const SYNC_TIMEOUT_MS: u64 = 30_000;
/// Events per `/messages` page: the first page of a reading is small (a room read a minute ago
/// has little new), later ones grow to the full size.
const FIRST_PAGE: u32 = 10;
const PAGE: u32 = 100;
/// At most this many events are read back in one reading of a room.
const MAX_READ: usize = 5_000;

/// Where a room's timeline is known to be complete: every relayed event up to it was delivered
/// or queued. Persisted per room, so a restart catches up from there.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Mark {
    event_id: String,
    ts: i64,
}

fn mark_key(room: &RoomId) -> String {
    format!("caught_up:{room}")
}

/// Relayed events of one room seen in `/sync`, to check for at the deadline.
type SyncBatch = (tokio::time::Instant, OwnedRoomId, Vec<Value>);

/// What a sweep did.
pub struct Sweep {
    /// Events queued.
    pub queued: usize,
    /// Every portal was read and settled (else read again soon).
    pub complete: bool,
}

/// What a reading of one room found.
pub struct Undelivered {
    /// When the reading began (unix ms).
    read_at: i64,
    /// Relayed events never delivered, old enough to count as held, in timeline order.
    pub events: Vec<MxEvent>,
    /// The newest event read that is old enough to count (the room's next mark).
    mark: Option<Mark>,
    /// More events were held than one reading covers: the oldest ones were not reached.
    pub truncated: bool,
    /// The room turned encryption on in what was read.
    encryption_on: bool,
}

/// When lanes compare the timeline before what they bridge (see the module doc): for a while
/// after a start, and after events arrived late.
#[derive(Default)]
pub struct Gaps {
    /// Until when (unix ms) lanes look for events the homeserver skipped.
    until: std::sync::atomic::AtomicI64,
}

impl Bridge {
    /// Note delivered events: whether the homeserver is catching up (an event older than a few
    /// seconds means it was held back: a gap is possible).
    pub fn note_delivered(&self, events: &[MxEvent]) {
        let now = now_ms();
        if events.iter().filter_map(|e| e.ts).any(|ts| ts < now - 5_000) {
            self.suspect_gaps();
        }
    }

    /// Look for skipped events in every lane for a while: twice `catch_up_secs` (none when 0).
    pub fn suspect_gaps(&self) {
        let secs = self.cfg().gateway.matrix.catch_up_secs as i64;
        self.gaps.until.fetch_max(now_ms() + 2_000 * secs, Ordering::Relaxed);
    }

    /// Before a room's lane bridges `batch`: bridge, in order, the events before its first one
    /// that the homeserver skipped, and cut the batch before any later skipped event (the next
    /// round bridges that one first). Best effort: a failed lookup only logs.
    pub async fn catch_up_before(&self, room: &str, mut batch: Vec<InboxItem>) -> Result<Vec<InboxItem>> {
        if batch.is_empty() || now_ms() > self.gaps.until.load(Ordering::Relaxed) {
            return Ok(batch);
        }
        let Ok(room_id) = OwnedRoomId::try_from(room) else {
            return Ok(batch);
        };
        let ids: Vec<Option<String>> = batch
            .iter()
            .map(|i| {
                serde_json::from_str::<Value>(&i.json)
                    .ok()
                    .and_then(|v| v["event_id"].as_str().map(str::to_owned))
            })
            .collect();
        let Some(last) = ids
            .iter()
            .rev()
            .flatten()
            .next()
            .and_then(|id| ruma::OwnedEventId::try_from(id.as_str()).ok())
        else {
            return Ok(batch);
        };
        let limit = (2 * (batch.len() as u32 + 20)).min(400);
        // Timeline order up to the batch's last event.
        let timeline = match self.reader.events_before(&room_id, &last, limit).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(room, "catch-up lookup failed: {e}");
                return Ok(batch);
            }
        };
        let position = |id: &str| timeline.iter().position(|e| e["event_id"] == id);
        // Where each batch item sits in the timeline (the last one is past the end).
        let first_pos = ids
            .iter()
            .map(|id| id.as_deref().map_or(Some(usize::MAX), position))
            .collect::<Vec<_>>();
        let skipped = self.skipped(&room_id, timeline.clone()).await?;
        let mut cut = batch.len();
        for ev in skipped {
            let at = ev
                .event_id
                .as_ref()
                .and_then(|id| position(id.as_str()))
                .unwrap_or(usize::MAX);
            // The batch items that come after this skipped event in the timeline.
            let follows = first_pos
                .iter()
                .position(|p| p.is_none_or(|p| p > at))
                .unwrap_or(batch.len());
            if follows > 0 {
                cut = cut.min(follows);
                continue; // a batch item comes first: bridged in the next round
            }
            if cut < batch.len() {
                break;
            }
            let id = ev.event_id.as_ref().map_or("", |id| id.as_str());
            tracing::warn!(room, event_id = %id, "the homeserver skipped this event; bridging it in its place");
            crate::metrics::METRICS.caught_up();
            match self.handle_mx_event(&ev.json).await {
                Ok(()) => {}
                Err(e) if e.is_transient() => return Err(e), // the lane retries the whole step
                Err(e) => {
                    crate::metrics::METRICS.failed(Direction::MxToTg);
                    self.store
                        .record_failure(Direction::MxToTg, &format!("catch-up:{id}"), &e.to_string())
                        .await?;
                }
            }
            self.store.mark_seen(&ev).await?;
        }
        batch.truncate(cut);
        Ok(batch)
    }

    /// Queue, in timeline order, every relayed event of every portal that the homeserver holds:
    /// never delivered and older than `min_age_ms`. A room that cannot be read, or that the homeserver delivered into while
    /// it was read, is read again next time (`complete` is false then).
    pub async fn catch_up_sweep(&self, min_age_ms: i64) -> Result<Sweep> {
        let mut rooms: Vec<OwnedRoomId> = self.portals.rooms();
        // Operators' commands are not held either.
        rooms.extend(self.joined_management_room());
        let mut sweep = Sweep {
            queued: 0,
            complete: true,
        };
        for room in rooms {
            match self.catch_up_room(&room, min_age_ms).await {
                Ok(Some(n)) => sweep.queued += n,
                Ok(None) => sweep.complete = false,
                Err(e) => {
                    tracing::warn!(%room, "catch-up: cannot read the timeline: {e}");
                    sweep.complete = false;
                }
            }
        }
        Ok(sweep)
    }

    /// Read `room` and queue what the homeserver holds; `None` when the homeserver kept
    /// delivering into it while it was read (three times): read again next round.
    async fn catch_up_room(&self, room: &OwnedRoomId, min_age_ms: i64) -> Result<Option<usize>> {
        for _ in 0..3 {
            let found = self.undelivered(room, min_age_ms).await?;
            if found.encryption_on {
                self.encryption_seen(room).await;
            }
            if let Some(first) = found.events.first() {
                let txn = format!("catch-up:{}", first.event_id.as_ref().map_or("", |id| id.as_str()));
                // Queued like a delivered transaction, unless the homeserver delivered into this
                // room while it was read (then read again, so the order holds).
                if !self
                    .store
                    .accept_found(txn.as_str().into(), room, found.read_at, &found.events)
                    .await?
                {
                    tracing::debug!(%room, "events arrived while the timeline was read; reading again");
                    continue;
                }
                tracing::warn!(%room, n = found.events.len(), "the homeserver did not deliver these events; bridged them now");
                crate::metrics::METRICS.caught_up_n(found.events.len() as u64);
            }
            if found.truncated {
                let reason = format!(
                    "more than {MAX_READ} events of this room were held by the homeserver; the oldest were not bridged"
                );
                tracing::error!(%room, "{reason}");
                self.store
                    .record_failure(Direction::MxToTg, &format!("catch-up:{room}"), &reason)
                    .await?;
            }
            if let Some(mark) = found.mark {
                self.store
                    .set_kv(&mark_key(room), &serde_json::to_string(&mark)?)
                    .await?;
            }
            return Ok(Some(found.events.len()));
        }
        Ok(None)
    }

    /// Follow the portals with `/sync` as the bot's device until `stop`, when
    /// `gateway.matrix.follow_sync` says so (unset: unless the homeserver is Synapse). A room with
    /// relayed events that the homeserver has not pushed [`SYNC_GRACE`] after `/sync` showed
    /// them is caught up (waking `wake`); invites of the bot are answered.
    pub async fn follow_sync(self: Arc<Self>, wake: Arc<Notify>, mut stop: watch::Receiver<bool>) {
        let mut is_synapse: Option<bool> = None;
        let (tx, rx) = mpsc::unbounded_channel::<SyncBatch>();
        let checker = tokio::spawn(self.clone().queue_unpushed(rx, wake, stop.clone()));
        let mut since: Option<String> = None;
        let mut backoff = Duration::from_secs(1);
        // Events from before the start are the sweep's (an initial sync shows some of them).
        let started = now_ms() - SLACK_MS;
        loop {
            let wait = if !self.portals.any() {
                Some(Duration::from_millis(250))
            } else {
                match self.cfg().gateway.matrix.follow_sync {
                    Some(true) => None,
                    Some(false) => Some(Duration::from_secs(5)),
                    None => match is_synapse {
                        Some(true) => Some(Duration::from_secs(5)),
                        Some(false) => None,
                        None => match self.mx.synapse_version().await {
                            Ok(v) => {
                                match &v {
                                    Some(version) => tracing::info!(
                                        version,
                                        "Synapse retries failed deliveries itself: rooms are not followed with /sync"
                                    ),
                                    None => {
                                        tracing::info!("following the bridged rooms with /sync as the bot's device")
                                    }
                                }
                                is_synapse = Some(v.is_some());
                                continue;
                            }
                            Err(e) => {
                                tracing::debug!("cannot tell the homeserver's kind yet: {e}");
                                Some(backoff)
                            }
                        },
                    },
                }
            };
            if let Some(wait) = wait {
                since = None; // a pause: the sweep covers it, start over from now
                tokio::select! {
                    _ = tokio::time::sleep(wait) => continue,
                    _ = stop.wait_for(|s| *s) => break,
                }
            }
            tracing::trace!(since = ?since, "/sync");
            let res = tokio::select! {
                r = self.reader.sync(since.as_deref(), SYNC_TIMEOUT_MS, &FOLLOWED) => r,
                _ = stop.wait_for(|s| *s) => break,
            };
            let v = match res {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!("/sync as the bridge's device failed, retrying in {backoff:?}: {e}");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {},
                        _ = stop.wait_for(|s| *s) => break,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    continue;
                }
            };
            backoff = Duration::from_secs(1);
            tracing::debug!(
                joined = v["rooms"]["join"].as_object().map_or(0, |o| o.len()),
                invited = v["rooms"]["invite"].as_object().map_or(0, |o| o.len()),
                initial = since.is_none(),
                "/sync answered"
            );
            // In an initial sync only what came after the start counts (the rest: the sweep).
            let after = if since.is_some() { i64::MIN } else { started };
            self.take_sync(&v, after, &tx).await;
            since = v["next_batch"].as_str().map(str::to_owned);
        }
        drop(tx);
        let _ = checker.await;
    }

    /// Hand the relayed events of one `/sync` answer sent at or after `after` (unix ms) to the
    /// checker; answer invites.
    async fn take_sync(&self, v: &Value, after: i64, tx: &mpsc::UnboundedSender<SyncBatch>) {
        let deadline = tokio::time::Instant::now() + SYNC_GRACE;
        for (room, r) in v["rooms"]["join"].as_object().into_iter().flatten() {
            let Ok(room) = OwnedRoomId::try_from(room.as_str()) else {
                continue;
            };
            if self.portals.chat_for_room(&room).is_none() && self.joined_management_room().as_ref() != Some(&room) {
                continue;
            }
            let timeline = r["timeline"]["events"].as_array().into_iter().flatten();
            if timeline.clone().any(|e| e["type"] == "m.room.encryption") {
                self.encryption_seen(&room).await;
            }
            let events: Vec<Value> = r["timeline"]["events"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| self.may_be_held(e) && e["origin_server_ts"].as_i64().unwrap_or(0) >= after)
                .cloned()
                .collect();
            if !events.is_empty() {
                let _ = tx.send((deadline, room, events));
            }
        }
        for (room, r) in v["rooms"]["invite"].as_object().into_iter().flatten() {
            let Ok(room) = OwnedRoomId::try_from(room.as_str()) else {
                continue;
            };
            // Who invited the bot: the member event for it in the invite state.
            let sender = r["invite_state"]["events"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|e| e["type"] == "m.room.member" && e["state_key"] == self.bot_mxid.as_str())
                .and_then(|e| e["sender"].as_str())
                .and_then(|s| ruma::OwnedUserId::try_from(s).ok());
            if let Err(e) = self.bot_invited(&room, sender.as_deref()).await {
                tracing::warn!(%room, "cannot answer the invite yet: {e}");
            }
        }
    }

    /// After each batch's grace period: if the homeserver has still not pushed some of its
    /// events, catch the room up, which queues every event it holds there in timeline order
    /// (older ones the sweep had not reached yet come first, so nothing is overtaken).
    async fn queue_unpushed(
        self: Arc<Self>,
        mut rx: mpsc::UnboundedReceiver<SyncBatch>,
        wake: Arc<Notify>,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            let (deadline, room, events) = tokio::select! {
                batch = rx.recv() => match batch {
                    Some(b) => b,
                    None => return,
                },
                _ = stop.wait_for(|s| *s) => return,
            };
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {},
                _ = stop.wait_for(|s| *s) => return,
            }
            let queued = async {
                // Pushed meanwhile (the usual case): nothing to read.
                if self.unseen_events(&room, events).await?.is_empty() {
                    return Ok(Some(0));
                }
                self.catch_up_room(&room, SYNC_GRACE.as_millis() as i64 - SLACK_MS / 2)
                    .await
            }
            .await;
            match queued {
                Ok(Some(0)) => {}
                Ok(Some(_)) => wake.notify_one(),
                // Not lost: the periodic sweep reads the room again.
                Ok(None) => tracing::debug!(%room, "the room kept changing while it was read"),
                Err(e) => tracing::warn!(%room, "cannot catch up after /sync: {e}"),
            }
        }
    }

    /// A portal turned encryption on, as read from its timeline (the push may be held).
    async fn encryption_seen(&self, room: &OwnedRoomId) {
        if !self.is_encrypted(room)
            && let Err(e) = self.room_encrypted(room).await
        {
            tracing::warn!(%room, "the room is encrypted, but the bridge's device is not ready: {e}");
        }
    }

    /// Per portal, the relayed events the homeserver holds (never delivered, older than
    /// `min_age_ms`), with the time the oldest was sent. For `tgmx audit` and `tgmx status`.
    pub async fn held_by_homeserver(&self, min_age_ms: i64) -> Result<Vec<(OwnedRoomId, usize, Option<i64>)>> {
        let rooms: Vec<OwnedRoomId> = self.portals.rooms();
        let mut out = Vec::new();
        for room in rooms {
            let found = self.undelivered(&room, min_age_ms).await?;
            let oldest = found.events.first().and_then(|e| e.ts);
            out.push((room, found.events.len() + usize::from(found.truncated), oldest));
        }
        Ok(out)
    }

    /// Read `room` back from its end to its mark (or to the portal's creation, at most
    /// [`REACH_MS`] back) and return what was never delivered, oldest first.
    async fn undelivered(&self, room: &RoomId, min_age_ms: i64) -> Result<Undelivered> {
        let now = now_ms();
        let mark: Option<Mark> = self
            .store
            .get_kv(&mark_key(room))
            .await?
            .and_then(|m| serde_json::from_str(&m).ok());
        let start = match &mark {
            Some(m) => m.ts,
            None => match self.store.portal_created_at(room).await? {
                Some(created) => created,
                // The management room: from when the bot joined it.
                None => self
                    .management_joined_at()
                    .filter(|(r, _)| r == room)
                    .map_or(now, |(_, at)| at),
            },
        };
        let floor = (start - SLACK_MS).max(now - REACH_MS);
        let cutoff = now - min_age_ms;
        // Newest first, until the mark or the floor.
        let mut read: Vec<Value> = Vec::new();
        let mut from: Option<String> = None;
        let mut truncated = true;
        let mut page = FIRST_PAGE;
        while read.len() < MAX_READ {
            let (chunk, end) = self.reader.messages_back(room, from.as_deref(), page).await?;
            page = PAGE;
            let mut reached = false;
            for ev in chunk {
                let ts = ev["origin_server_ts"].as_i64().unwrap_or(0);
                let is_mark = mark.as_ref().is_some_and(|m| ev["event_id"] == m.event_id.as_str());
                if is_mark || ts < floor {
                    reached = true;
                    break;
                }
                read.push(ev);
            }
            if reached || end.is_none() {
                truncated = false;
                break;
            }
            from = end;
        }
        read.reverse();
        // Only what is old enough counts; the rest is in flight and read again next time.
        if let Some(young) = read
            .iter()
            .position(|e| e["origin_server_ts"].as_i64().unwrap_or(0) > cutoff)
        {
            read.truncate(young);
        }
        let encryption_on = read.iter().any(|e| e["type"] == "m.room.encryption");
        let mark = read.last().and_then(|e| {
            Some(Mark {
                event_id: e["event_id"].as_str()?.to_owned(),
                ts: e["origin_server_ts"].as_i64()?,
            })
        });
        let candidates: Vec<Value> = read.into_iter().filter(|e| self.may_be_held(e)).collect();
        Ok(Undelivered {
            read_at: now,
            events: self.unseen_events(room, candidates).await?,
            mark,
            truncated,
            encryption_on,
        })
    }

    /// Of `events` (chronological, one room), those the homeserver skipped: relayed types, not
    /// from the bridge, never seen, and newer than the bridge's first event in the room.
    async fn skipped(&self, room: &RoomId, events: Vec<Value>) -> Result<Vec<MxEvent>> {
        let Some(since) = self.store.first_seen_in(room).await? else {
            return Ok(Vec::new()); // nothing delivered here yet: everything is history
        };
        let candidates: Vec<Value> = events
            .into_iter()
            .filter(|e| self.may_be_held(e) && e["origin_server_ts"].as_i64().unwrap_or(0) >= since - SLACK_MS)
            .collect();
        self.unseen_events(room, candidates).await
    }

    /// Whether a timeline event is one the bridge relays and may have missed: a relayed type,
    /// with an id, not the bridge's own.
    fn may_be_held(&self, e: &Value) -> bool {
        RELAYED.contains(&e["type"].as_str().unwrap_or_default()) && e["event_id"].is_string() && !self.is_own_echo(e)
    }

    /// The events of `candidates` never seen, as inbox events of `room`.
    async fn unseen_events(&self, room: &RoomId, candidates: Vec<Value>) -> Result<Vec<MxEvent>> {
        let ids: Vec<&ruma::EventId> = candidates
            .iter()
            .filter_map(|e| e["event_id"].as_str()?.try_into().ok())
            .collect();
        let unseen = self.store.unseen(&ids).await?;
        Ok(candidates
            .into_iter()
            .filter(|e| unseen.iter().any(|u| e["event_id"] == u.as_str()))
            .map(|mut e| {
                e["room_id"] = Value::from(room.as_str());
                MxEvent {
                    room: Some(room.to_owned()),
                    event_id: e["event_id"].as_str().and_then(|id| id.try_into().ok()),
                    ts: e["origin_server_ts"].as_i64(),
                    json: e.to_string(),
                    echo: false,
                }
            })
            .collect())
    }
}
