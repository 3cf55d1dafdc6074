//! Catch-up: bridging Matrix events the homeserver never delivered, in their place.
//!
//! Synapse sends an appservice its transactions one at a time, in order, but two races in its
//! scheduler (synapse/appservice/scheduler.py) break that after a failed send (the bridge was
//! down, or slow to answer):
//! - the appservice is marked down *in the background*, so the next transaction can go out
//!   before the failed one, which follows later from the recoverer;
//! - when the recoverer finds nothing left it marks the appservice up; a transaction created
//!   just before that mark is not sent until some later failure starts a recoverer again, which
//!   can be days. Seen in our rig: one event bridged about 120 messages late, after a crash.
//!
//! Transaction numbers cannot show the gap (Synapse numbers transactions from one sequence
//! shared by all its appservices). Timelines can. Every delivered event id is recorded
//! (`mx_seen`), and:
//! - [`Bridge::catch_up_before`]: while a gap is likely (for twice `catch_up_secs` after start,
//!   or after the homeserver delivered old events), a room's lane asks for the events before the
//!   ones it is about to bridge; any it never received is bridged in its timeline place;
//! - [`Bridge::catch_up_sweep`]: every `gateway.matrix.catch_up_secs`, the end of each portal's
//!   timeline is compared too, for a skipped event with nothing after it in its room.
//!
//! A skipped event is recognised as: not seen, not from the bridge, newer than the bridge's first
//! event in that room, and older than an event the bridge did receive (Synapse delivers in
//! order, so an older unseen event was skipped, not pending). When Synapse finally sends it,
//! it is already seen and is not bridged again.

use std::sync::atomic::Ordering;

use reqwest::Method;
use serde_json::Value;

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
/// An event this much older than one delivered counts as skipped (clock and ordering slack).
const SLACK_MS: i64 = 2_000;
/// The sweep leaves events younger than this to normal delivery.
const SWEEP_MIN_AGE_MS: i64 = 30_000;

impl Bridge {
    /// Note delivered events: the newest timestamp seen, and whether the homeserver is catching
    /// up (an event older than a few seconds means it was held back: a gap is possible).
    pub fn note_delivered(&self, events: &[MxEvent]) {
        let now = now_ms();
        for ts in events.iter().filter_map(|e| e.ts) {
            self.newest_delivered_ts.fetch_max(ts, Ordering::Relaxed);
            if ts < now - 5_000 {
                self.suspect_gaps();
            }
        }
    }

    /// Look for skipped events in every lane for a while: twice `catch_up_secs` (none when 0).
    pub fn suspect_gaps(&self) {
        let secs = self.cfg().gateway.matrix.catch_up_secs as i64;
        self.suspect_until.fetch_max(now_ms() + 2_000 * secs, Ordering::Relaxed);
    }

    /// Before a room's lane bridges `batch`: bridge, in order, the events before its first one
    /// that the homeserver skipped, and cut the batch before any later skipped event (the next
    /// round bridges that one first). Best effort: a failed lookup only logs.
    pub async fn catch_up_before(&self, room: &str, mut batch: Vec<InboxItem>) -> Result<Vec<InboxItem>> {
        if batch.is_empty() || now_ms() > self.suspect_until.load(Ordering::Relaxed) {
            return Ok(batch);
        }
        let ids: Vec<Option<String>> = batch
            .iter()
            .map(|i| {
                serde_json::from_str::<Value>(&i.json)
                    .ok()
                    .and_then(|v| v["event_id"].as_str().map(str::to_owned))
            })
            .collect();
        let Some(last) = ids.iter().rev().flatten().next() else {
            return Ok(batch);
        };
        let path = format!(
            "/_matrix/client/v3/rooms/{}/context/{}?limit={}",
            enc(room),
            enc(last),
            (2 * (batch.len() + 20)).min(400)
        );
        let ctx = match self.mx.request(Method::GET, &path, None, None).await {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(room, "catch-up lookup failed: {e}");
                return Ok(batch);
            }
        };
        // Timeline order up to the batch's last event (the server lists earlier ones newest first).
        let mut timeline: Vec<Value> = ctx["events_before"].as_array().cloned().unwrap_or_default();
        timeline.reverse();
        let position = |id: &str| timeline.iter().position(|e| e["event_id"] == id);
        // Where each batch item sits in the timeline (the last one is past the end).
        let first_pos = ids
            .iter()
            .map(|id| id.as_deref().map_or(Some(usize::MAX), position))
            .collect::<Vec<_>>();
        let skipped = self.skipped(room, timeline.clone(), None).await?;
        let mut cut = batch.len();
        for ev in skipped {
            let at = ev.event_id.as_deref().and_then(position).unwrap_or(usize::MAX);
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
            let id = ev.event_id.clone().unwrap_or_default();
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

    /// Compare the end of each portal's timeline with what was delivered; queue skipped events.
    /// Returns how many were queued.
    pub async fn catch_up_sweep(&self) -> Result<usize> {
        let rooms: Vec<String> = self.portals.read().unwrap().values().map(|r| r.to_string()).collect();
        let mut queued = 0;
        for room in rooms {
            let path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=30", enc(&room));
            let chunk = match self.mx.request(Method::GET, &path, None, None).await {
                Ok(v) => v["chunk"].as_array().cloned().unwrap_or_default(),
                Err(e) => {
                    tracing::debug!(room, "catch-up sweep failed: {e}");
                    continue;
                }
            };
            let mut events = chunk;
            events.reverse();
            let horizon = self
                .newest_delivered_ts
                .load(Ordering::Relaxed)
                .min(now_ms() - SWEEP_MIN_AGE_MS + SLACK_MS);
            for ev in self.skipped(&room, events, Some(horizon)).await? {
                let id = ev.event_id.clone().unwrap_or_default();
                tracing::warn!(room, event_id = %id, "the homeserver skipped this event; bridging it now");
                crate::metrics::METRICS.caught_up();
                // Queued like a delivered transaction, so it takes its turn in the room's lane.
                if self.store.accept_transaction(&format!("catch-up:{id}"), &[ev]).await? {
                    queued += 1;
                }
            }
        }
        Ok(queued)
    }

    /// Of `events` (chronological, one room), those the homeserver skipped: relayed types, not
    /// from the bridge, never seen, newer than the bridge's first event in the room and, when
    /// `before_ts` is given (events not known to precede a delivered one), older than it by more
    /// than the slack.
    async fn skipped(&self, room: &str, events: Vec<Value>, before_ts: Option<i64>) -> Result<Vec<MxEvent>> {
        let Some(since) = self.store.first_seen_in(room).await? else {
            return Ok(Vec::new()); // nothing delivered here yet: everything is history
        };
        let candidates: Vec<Value> = events
            .into_iter()
            .filter(|e| {
                let ts = e["origin_server_ts"].as_i64().unwrap_or(0);
                RELAYED.contains(&e["type"].as_str().unwrap_or_default())
                    && e["event_id"].is_string()
                    && !self.is_own_echo(e)
                    && ts >= since - SLACK_MS
                    && before_ts.is_none_or(|b| ts < b - SLACK_MS)
            })
            .collect();
        let ids: Vec<&str> = candidates.iter().filter_map(|e| e["event_id"].as_str()).collect();
        let unseen = self.store.unseen(&ids).await?;
        Ok(candidates
            .into_iter()
            .filter(|e| unseen.iter().any(|u| e["event_id"] == u.as_str()))
            .map(|mut e| {
                e["room_id"] = Value::from(room);
                MxEvent {
                    room: room.to_owned(),
                    event_id: e["event_id"].as_str().map(str::to_owned),
                    ts: e["origin_server_ts"].as_i64(),
                    json: e.to_string(),
                    echo: false,
                }
            })
            .collect())
    }
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}
