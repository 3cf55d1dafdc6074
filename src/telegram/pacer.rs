//! Send pacing over a sliding window, per key: Telegram allows a bot about 20 messages per minute
//! in one group (key: the chat, window: a minute) and about 30 requests per second in all (one
//! key, window: a second). Sends beyond that wait for the window to move instead of failing with
//! 429 (or being dropped). Used only by [`crate::telegram::sender`].
//!
//! **A send's window starts when Telegram answered it**, not when it was due: Telegram counts a
//! request when it arrives, some varying time after it was sent, so a window counted from the
//! send could let the next one arrive a little early and be refused (the bench's `limits`
//! section got 429s that way). A [`Slot`] is held for the whole request: while it is in flight
//! its window has not started and it fills its place; once answered, the window runs from then
//! (later than the arrival, so never early). A request Telegram refused with 429 did not count
//! and gives its place back ([`Slot::refused`]), so the retry does not queue behind it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

pub struct Pacer {
    inner: Arc<Inner>,
}

struct Inner {
    /// Sends allowed per key in any window (0: unlimited); changed on reload.
    per_window: AtomicU32,
    /// The window the limit applies to (a minute per chat, a second per bot).
    window: Duration,
    /// Each key's sends that still count: in flight, or answered less than a window ago.
    slots: Mutex<HashMap<i64, Vec<Held>>>,
    /// Woken when a send is answered or refused (a waiter then knows when its place frees).
    changed: Notify,
    /// Numbers the slots, so an answer finds its own.
    next_id: AtomicU64,
}

#[derive(Clone, Copy)]
struct Held {
    id: u64,
    /// When Telegram answered; `None`: in flight (its window has not started).
    answered: Option<Instant>,
}

/// A place in a key's window, held for one request. Dropped: answered now (the window runs from
/// the drop); [`Slot::refused`]: the request did not count.
#[must_use = "a slot is held for the request it paces"]
pub struct Slot {
    /// `None` when unpaced (nothing to give back).
    held: Option<(Arc<Inner>, i64, u64)>,
}

impl Pacer {
    /// `per_minute` sends per key in any minute.
    pub fn new(per_minute: u32) -> Pacer {
        Pacer::per_window(per_minute, Duration::from_secs(60))
    }

    /// `limit` sends per key in any `window`.
    pub fn per_window(limit: u32, window: Duration) -> Pacer {
        Pacer {
            inner: Arc::new(Inner {
                per_window: AtomicU32::new(limit),
                window,
                slots: Mutex::default(),
                changed: Notify::new(),
                next_id: AtomicU64::new(0),
            }),
        }
    }

    /// Change the rate (config reload).
    pub fn set_rate(&self, per_window: u32) {
        self.inner.per_window.store(per_window, Ordering::Relaxed);
        self.inner.changed.notify_waiters();
    }

    /// A slot for `key` at `now`, or when to try again: `Err(Some(t))` at `t` (a window ends
    /// then), `Err(None)` once a send in flight is answered.
    fn try_take(&self, key: i64, now: Instant) -> Result<Slot, Option<Instant>> {
        let limit = self.inner.per_window.load(Ordering::Relaxed) as usize;
        if limit == 0 {
            return Ok(Slot { held: None });
        }
        let window = self.inner.window;
        let mut slots = self.inner.slots.lock().expect("lock");
        let held = slots.entry(key).or_default();
        held.retain(|h| h.answered.is_none_or(|at| now.saturating_duration_since(at) < window));
        if held.len() < limit {
            let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
            held.push(Held { id, answered: None });
            return Ok(Slot {
                held: Some((self.inner.clone(), key, id)),
            });
        }
        // Full: the `len - limit + 1`-th earliest window end makes room (in-flight ones end last).
        let mut ends: Vec<Instant> = held.iter().filter_map(|h| h.answered).map(|at| at + window).collect();
        ends.sort_unstable();
        Err(ends.get(held.len() - limit).copied())
    }

    /// Wait for a slot for `key`.
    pub async fn take(&self, key: i64) -> Slot {
        let mut waited = false;
        loop {
            // Registered before looking, so an answer in between is not missed.
            let changed = self.inner.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match self.try_take(key, Instant::now()) {
                Ok(slot) => return slot,
                Err(at) => {
                    if !waited {
                        waited = true;
                        tracing::debug!(key, "pacing telegram sends");
                    }
                    match at {
                        Some(at) => {
                            tokio::select! {
                                _ = tokio::time::sleep_until(at.into()) => {}
                                _ = changed => {}
                            }
                        }
                        None => changed.await,
                    }
                }
            }
        }
    }
}

impl Slot {
    /// Telegram refused the request (429): it did not count, its place is free again.
    pub fn refused(mut self) {
        if let Some((inner, key, id)) = self.held.take() {
            inner.settle(key, id, None);
        }
    }

    /// Answered at `at` (tests; a drop is answered now).
    #[cfg(test)]
    fn answered_at(mut self, at: Instant) {
        if let Some((inner, key, id)) = self.held.take() {
            inner.settle(key, id, Some(at));
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some((inner, key, id)) = self.held.take() {
            inner.settle(key, id, Some(Instant::now()));
        }
    }
}

impl Inner {
    /// Slot `id` of `key` was answered at `at` (its window starts), or refused (`None`: gone).
    fn settle(&self, key: i64, id: u64, at: Option<Instant>) {
        {
            let mut slots = self.slots.lock().expect("lock");
            if let Some(held) = slots.get_mut(&key) {
                match at {
                    Some(at) => held
                        .iter_mut()
                        .filter(|h| h.id == id)
                        .for_each(|h| h.answered = Some(at)),
                    None => held.retain(|h| h.id != id),
                }
                if held.is_empty() {
                    slots.remove(&key);
                }
            }
        }
        self.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn twenty_a_minute_then_waits_for_the_first_answer() {
        let p = Pacer::new(20);
        let t0 = Instant::now();
        let mut slots: Vec<Slot> = (0..20).map(|_| p.try_take(-1, t0).expect("free")).collect();
        // All 20 in flight: the 21st waits for an answer, whenever it comes.
        assert_eq!(p.try_take(-1, t0).err(), Some(None));
        // Other chats are not affected.
        drop(p.try_take(-2, t0).expect("another chat"));
        // The first is answered 2 s later: its window ends a minute after that, not after t0.
        slots.remove(0).answered_at(t0 + secs(2));
        assert_eq!(p.try_take(-1, t0 + secs(3)).err(), Some(Some(t0 + secs(62))));
        assert_eq!(p.try_take(-1, t0 + secs(61)).err(), Some(Some(t0 + secs(62))));
        let s = p.try_take(-1, t0 + secs(62)).expect("a minute after the answer");
        s.answered_at(t0 + secs(62));
        for s in slots {
            s.answered_at(t0 + secs(2));
        }
    }

    #[test]
    fn no_send_starts_while_the_limit_is_in_flight_or_answered_within_a_window() {
        // Requests answered 0-900 ms after they leave, out of order. A request arrives between
        // its start and its answer, so if every start comes a window after all but `limit - 1`
        // of the answers before it, no window of arrivals holds more than the limit.
        let limit = 5;
        let p = Pacer::per_window(limit as u32, secs(1));
        let t0 = Instant::now();
        let mut now = t0;
        let mut sends: Vec<(Instant, Instant)> = Vec::new(); // (start, answer)
        let mut in_flight: Vec<(Slot, Instant)> = Vec::new();
        while sends.len() < 40 {
            in_flight.sort_by_key(|(_, at)| *at);
            while in_flight.first().is_some_and(|(_, at)| *at <= now) {
                let (s, at) = in_flight.remove(0);
                s.answered_at(at);
            }
            match p.try_take(3, now) {
                Ok(s) => {
                    let answer = now + Duration::from_millis((sends.len() as u64 * 377) % 900);
                    sends.push((now, answer));
                    in_flight.push((s, answer));
                }
                Err(Some(at)) => now = at.max(now + Duration::from_millis(1)),
                Err(None) => now = in_flight.iter().map(|(_, at)| *at).min().expect("something in flight"),
            }
        }
        for (k, (start, _)) in sends.iter().enumerate() {
            let counting = sends[..k]
                .iter()
                .filter(|(_, answer)| *answer > *start || start.duration_since(*answer) < secs(1))
                .count();
            assert!(
                counting < limit,
                "send {k} started with {counting} others still counting"
            );
        }
        // And it did not wait longer than that: the pacer kept sends going.
        assert!(now < t0 + secs(20), "40 sends took {:?}", now - t0);
    }

    #[test]
    fn a_refused_send_gives_its_place_back() {
        let p = Pacer::per_window(2, secs(1));
        let t0 = Instant::now();
        let a = p.try_take(0, t0).expect("first");
        let b = p.try_take(0, t0).expect("second");
        assert!(p.try_take(0, t0).is_err());
        b.refused();
        let c = p.try_take(0, t0).expect("the refused one's place");
        a.answered_at(t0);
        c.answered_at(t0);
        assert_eq!(p.try_take(0, t0).err(), Some(Some(t0 + secs(1))));
    }

    #[test]
    fn zero_means_unlimited() {
        let p = Pacer::new(0);
        let t0 = Instant::now();
        let slots: Vec<Slot> = (0..1000).map(|_| p.try_take(1, t0).expect("unpaced")).collect();
        drop(slots);
        assert!(p.inner.slots.lock().expect("lock").is_empty());
    }

    #[tokio::test]
    async fn a_waiter_goes_once_the_window_after_an_answer_ends() {
        let p = Pacer::per_window(1, Duration::from_millis(50));
        let first = p.take(9).await;
        let t = Instant::now();
        let waiter = async {
            let s = p.take(9).await;
            drop(s);
            Instant::now()
        };
        let answer = async {
            tokio::time::sleep(Duration::from_millis(30)).await;
            let at = Instant::now();
            drop(first);
            at
        };
        let (went, answered) = tokio::join!(waiter, answer);
        assert!(
            went >= answered + Duration::from_millis(50),
            "went {:?} after the start",
            went - t
        );
    }
}
