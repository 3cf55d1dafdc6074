//! Send pacing over a sliding window, per key: Telegram allows a bot about 20 messages per minute
//! in one group (key: the chat, window: a minute) and about 30 requests per second in all (one
//! key, window: a second). Sends beyond that wait for the window to move instead of failing with
//! 429 (or being dropped). Used only by [`crate::telegram::sender`].

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub struct Pacer {
    /// Sends allowed per key in any window (0: unlimited); changed on reload.
    per_window: AtomicU32,
    /// The window the limit applies to (a minute per chat, a second per bot).
    window: Duration,
    /// When each key's sends in the current window are (or were) due, oldest first.
    sent: Mutex<HashMap<i64, VecDeque<Instant>>>,
}

impl Pacer {
    /// `per_minute` sends per key in any minute.
    pub fn new(per_minute: u32) -> Pacer {
        Pacer::per_window(per_minute, Duration::from_secs(60))
    }

    /// `limit` sends per key in any `window`.
    pub fn per_window(limit: u32, window: Duration) -> Pacer {
        Pacer {
            per_window: AtomicU32::new(limit),
            window,
            sent: Mutex::default(),
        }
    }

    /// Change the rate (config reload).
    pub fn set_rate(&self, per_window: u32) {
        self.per_window.store(per_window, Ordering::Relaxed);
    }

    /// How long a send to `chat` at `now` must wait; records the send at its due time.
    pub fn reserve(&self, chat: i64, now: Instant) -> Duration {
        let per_minute = self.per_window.load(Ordering::Relaxed) as usize;
        if per_minute == 0 {
            return Duration::ZERO;
        }
        let mut sent = self.sent.lock().expect("lock");
        let q = sent.entry(chat).or_default();
        while q.front().is_some_and(|t| now.duration_since(*t) >= self.window) {
            q.pop_front();
        }
        let due = if q.len() >= per_minute {
            // The send that leaves the window makes room.
            q[q.len() - per_minute] + self.window
        } else {
            now
        };
        let due = due.max(q.back().copied().unwrap_or(now));
        q.push_back(due);
        due.saturating_duration_since(now)
    }

    /// Wait for a slot for `chat`.
    pub async fn wait(&self, chat: i64) {
        let d = self.reserve(chat, Instant::now());
        if !d.is_zero() {
            tracing::debug!(chat, wait_ms = d.as_millis() as u64, "pacing telegram sends");
            tokio::time::sleep(d).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twenty_a_minute_then_waits() {
        let p = Pacer::new(20);
        let t0 = Instant::now();
        for _ in 0..20 {
            assert_eq!(p.reserve(-1, t0), Duration::ZERO);
        }
        assert_eq!(p.reserve(-1, t0), Duration::from_secs(60));
        // Other chats are not affected.
        assert_eq!(p.reserve(-2, t0), Duration::ZERO);
        // After the window the budget is back (the 21st send was booked at t0 + 60 s).
        let later = t0 + Duration::from_secs(61);
        assert_eq!(p.reserve(-1, later), Duration::ZERO);
    }

    #[test]
    fn any_minute_holds_at_most_the_limit() {
        let p = Pacer::new(5);
        let t0 = Instant::now();
        let mut due: Vec<Duration> = (0..23)
            .map(|i| p.reserve(7, t0 + Duration::from_millis(i * 100)) + Duration::from_millis(i * 100))
            .collect();
        due.sort();
        for (i, d) in due.iter().enumerate() {
            let in_window = due[i..]
                .iter()
                .take_while(|e| **e < *d + Duration::from_secs(60))
                .count();
            assert!(in_window <= 5, "{in_window} sends within a minute from {d:?}");
        }
        assert_eq!(p.reserve(0, t0), Duration::ZERO);
    }

    #[test]
    fn thirty_a_second_for_the_bot() {
        let p = Pacer::per_window(30, Duration::from_secs(1));
        let t0 = Instant::now();
        assert!((0..30).all(|_| p.reserve(0, t0).is_zero()));
        assert_eq!(p.reserve(0, t0), Duration::from_secs(1));
    }

    #[test]
    fn zero_means_unlimited() {
        let p = Pacer::new(0);
        let t0 = Instant::now();
        assert!((0..1000).all(|_| p.reserve(1, t0).is_zero()));
    }
}
