//! Prometheus metrics (text exposition format, written by hand: a handful of counters does not
//! need a metrics framework). Process-wide, like the process they describe.

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::storage::Direction;

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

#[derive(Default)]
struct PerDirection {
    delivered: AtomicU64,
    failed: AtomicU64,
    latency_buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_ms: AtomicU64,
}

#[derive(Default)]
pub struct Metrics {
    tg_to_mx: PerDirection,
    mx_to_tg: PerDirection,
    reloads: AtomicU64,
    reloads_rejected: AtomicU64,
    /// Matrix events the homeserver skipped and the catch-up found (see bridge/catch_up.rs).
    caught_up: AtomicU64,
    /// The database refuses writes now (disk full, I/O error...): intake is stopped.
    storage_failing: AtomicBool,
    /// Writes that failed for a storage reason.
    storage_failures: AtomicU64,
    /// Lanes running now: Matrix -> Telegram, Telegram -> Matrix.
    mx_lanes: AtomicU64,
    tg_lanes: AtomicU64,
    /// Supervised tasks started again after a crash.
    restarts: AtomicU64,
}

pub static METRICS: std::sync::LazyLock<Metrics> = std::sync::LazyLock::new(Metrics::default);

impl Metrics {
    fn dir(&self, d: Direction) -> &PerDirection {
        match d {
            Direction::TgToMx => &self.tg_to_mx,
            Direction::MxToTg => &self.mx_to_tg,
        }
    }

    /// A message crossed; `latency_ms` from its original send to delivery.
    pub fn delivered(&self, d: Direction, latency_ms: i64) {
        let p = self.dir(d);
        p.delivered.fetch_add(1, Ordering::Relaxed);
        let ms = latency_ms.max(0) as u64;
        p.latency_count.fetch_add(1, Ordering::Relaxed);
        p.latency_sum_ms.fetch_add(ms, Ordering::Relaxed);
        for (i, le) in BUCKETS.iter().enumerate() {
            if ms as f64 <= le * 1000.0 {
                p.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Messages handled so far in both directions (delivered or failed): moves while work flows.
    pub fn activity(&self) -> u64 {
        [&self.tg_to_mx, &self.mx_to_tg]
            .iter()
            .map(|p| p.delivered.load(Ordering::Relaxed) + p.failed.load(Ordering::Relaxed))
            .sum()
    }

    pub fn failed(&self, d: Direction) {
        self.dir(d).failed.fetch_add(1, Ordering::Relaxed);
    }

    pub fn caught_up(&self) {
        self.caught_up_n(1);
    }

    pub fn caught_up_n(&self, n: u64) {
        self.caught_up.fetch_add(n, Ordering::Relaxed);
    }

    /// A write committed (`true`) or failed for a storage reason (`false`).
    pub fn storage_ok(&self, ok: bool) {
        self.storage_failing.store(!ok, Ordering::Relaxed);
        if !ok {
            self.storage_failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn lanes(&self, d: Direction, n: usize) {
        match d {
            Direction::MxToTg => &self.mx_lanes,
            Direction::TgToMx => &self.tg_lanes,
        }
        .store(n as u64, Ordering::Relaxed);
    }

    pub fn task_restarted(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
    }

    pub fn reloaded(&self, accepted: bool) {
        if accepted {
            &self.reloads
        } else {
            &self.reloads_rejected
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    /// The exposition text; `queue` is (telegram inbox, matrix inbox), `mode` the bridge mode.
    pub fn render(&self, queue: (i64, i64), mode: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP tgmx_messages_total Messages handled, by direction and outcome."
        );
        let _ = writeln!(out, "# TYPE tgmx_messages_total counter");
        for d in [Direction::TgToMx, Direction::MxToTg] {
            let p = self.dir(d);
            let _ = writeln!(
                out,
                "tgmx_messages_total{{direction=\"{}\",outcome=\"delivered\"}} {}",
                d.as_str(),
                p.delivered.load(Ordering::Relaxed)
            );
            let _ = writeln!(
                out,
                "tgmx_messages_total{{direction=\"{}\",outcome=\"failed\"}} {}",
                d.as_str(),
                p.failed.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP tgmx_matrix_events_caught_up_total Matrix events the homeserver skipped or held, found by the catch-up."
        );
        let _ = writeln!(out, "# TYPE tgmx_matrix_events_caught_up_total counter");
        let _ = writeln!(
            out,
            "tgmx_matrix_events_caught_up_total {}",
            self.caught_up.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP tgmx_storage_writes_failing 1 while the database refuses writes (disk full, I/O error); intake is stopped meanwhile.\n\
             # TYPE tgmx_storage_writes_failing gauge\n\
             tgmx_storage_writes_failing {}\n\
             # HELP tgmx_matrix_lanes Matrix -> Telegram lanes running (one per portal with work, and per other room while it has work).\n\
             # TYPE tgmx_matrix_lanes gauge\n\
             tgmx_matrix_lanes {}\n\
             # HELP tgmx_telegram_lanes Telegram -> Matrix lanes running (one per chat with work).\n\
             # TYPE tgmx_telegram_lanes gauge\n\
             tgmx_telegram_lanes {}\n\
             # HELP tgmx_task_restarts_total Supervised tasks started again after a crash.\n\
             # TYPE tgmx_task_restarts_total counter\n\
             tgmx_task_restarts_total {}\n\
             # HELP tgmx_storage_write_failures_total Database writes that failed for a storage reason.\n\
             # TYPE tgmx_storage_write_failures_total counter\n\
             tgmx_storage_write_failures_total {}",
            u8::from(self.storage_failing.load(Ordering::Relaxed)),
            self.mx_lanes.load(Ordering::Relaxed),
            self.tg_lanes.load(Ordering::Relaxed),
            self.restarts.load(Ordering::Relaxed),
            self.storage_failures.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP tgmx_bridge_latency_seconds Time from the original send to delivery on the other side."
        );
        let _ = writeln!(out, "# TYPE tgmx_bridge_latency_seconds histogram");
        for d in [Direction::TgToMx, Direction::MxToTg] {
            let p = self.dir(d);
            for (i, le) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "tgmx_bridge_latency_seconds_bucket{{direction=\"{}\",le=\"{le}\"}} {}",
                    d.as_str(),
                    p.latency_buckets[i].load(Ordering::Relaxed)
                );
            }
            let count = p.latency_count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "tgmx_bridge_latency_seconds_bucket{{direction=\"{}\",le=\"+Inf\"}} {count}",
                d.as_str()
            );
            let _ = writeln!(
                out,
                "tgmx_bridge_latency_seconds_sum{{direction=\"{}\"}} {}",
                d.as_str(),
                p.latency_sum_ms.load(Ordering::Relaxed) as f64 / 1000.0
            );
            let _ = writeln!(
                out,
                "tgmx_bridge_latency_seconds_count{{direction=\"{}\"}} {count}",
                d.as_str()
            );
        }
        let _ = writeln!(out, "# HELP tgmx_queue_depth Items stored and not yet bridged.");
        let _ = writeln!(out, "# TYPE tgmx_queue_depth gauge");
        let _ = writeln!(out, "tgmx_queue_depth{{source=\"telegram\"}} {}", queue.0);
        let _ = writeln!(out, "tgmx_queue_depth{{source=\"matrix\"}} {}", queue.1);
        let _ = writeln!(out, "# HELP tgmx_config_reloads_total Config reloads, by result.");
        let _ = writeln!(out, "# TYPE tgmx_config_reloads_total counter");
        let _ = writeln!(
            out,
            "tgmx_config_reloads_total{{result=\"accepted\"}} {}",
            self.reloads.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "tgmx_config_reloads_total{{result=\"rejected\"}} {}",
            self.reloads_rejected.load(Ordering::Relaxed)
        );
        let _ = writeln!(out, "# HELP tgmx_mode The bridge mode (1 for the current one).");
        let _ = writeln!(out, "# TYPE tgmx_mode gauge");
        for m in ["parallel", "cutover", "standby"] {
            let _ = writeln!(out, "tgmx_mode{{mode=\"{m}\"}} {}", u8::from(m == mode));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let m = Metrics::default();
        m.delivered(Direction::TgToMx, 80);
        m.delivered(Direction::TgToMx, 3000);
        m.failed(Direction::MxToTg);
        let text = m.render((1, 2), "cutover");
        assert!(
            text.contains("tgmx_messages_total{direction=\"tg_to_mx\",outcome=\"delivered\"} 2"),
            "{text}"
        );
        assert!(text.contains("tgmx_bridge_latency_seconds_bucket{direction=\"tg_to_mx\",le=\"0.1\"} 1"));
        assert!(text.contains("tgmx_bridge_latency_seconds_bucket{direction=\"tg_to_mx\",le=\"5\"} 2"));
        assert!(text.contains("tgmx_messages_total{direction=\"mx_to_tg\",outcome=\"failed\"} 1"));
        assert!(text.contains("tgmx_mode{mode=\"cutover\"} 1") && text.contains("tgmx_mode{mode=\"parallel\"} 0"));
        assert!(text.contains("tgmx_queue_depth{source=\"matrix\"} 2"));
    }
}
