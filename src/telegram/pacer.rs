//! Per-chat send pacing: Telegram allows a bot about 20 messages per minute in one group. Sends
//! beyond that wait for the window to move instead of failing with 429 (or being dropped).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub struct Pacer {
    /// Sends allowed per chat in any 60-second window (0: unlimited).
    per_minute: AtomicU32,
    window: Duration,
    sent: Mutex<HashMap<i64, VecDeque<Instant>>>,
}

impl Pacer {
    pub fn new(per_minute: u32) -> Pacer {
        Pacer {
            per_minute: AtomicU32::new(per_minute),
            window: Duration::from_secs(60),
            sent: Mutex::default(),
        }
    }

    /// Change the rate (config reload).
    pub fn set_rate(&self, per_minute: u32) {
        self.per_minute.store(per_minute, Ordering::Relaxed);
    }

    /// How long a send to `chat` at `now` must wait; records the send at its due time.
    pub fn reserve(&self, chat: i64, now: Instant) -> Duration {
        let per_minute = self.per_minute.load(Ordering::Relaxed) as usize;
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
    fn zero_means_unlimited() {
        let p = Pacer::new(0);
        let t0 = Instant::now();
        assert!((0..1000).all(|_| p.reserve(1, t0).is_zero()));
    }
}
