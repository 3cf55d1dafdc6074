//! `cargo bench`: bridge overhead, throughput and memory against real Synapse and the fake Bot
//! API, each figure next to a baseline measured in the same run (a direct client send to the
//! same Synapse). Prints a Markdown report; `bench/RESULTS.md` holds the last one.
//!
//! Arrival on Matrix is observed by one `/sync` long-poll loop for both the bridged and the direct
//! messages, so both include the same observation delay.

#![allow(dead_code)]

#[path = "../tests/it/fake_telegram.rs"]
mod fake_telegram;
#[path = "../tests/it/harness.rs"]
mod harness;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harness::{MxUser, TestApp};
use serde_json::Value;

/// Arrival times of message bodies, fed by a /sync loop.
#[derive(Clone, Default)]
struct Arrivals(Arc<Mutex<HashMap<String, Instant>>>);

impl Arrivals {
    fn start(user: MxUser, room: String) -> Arrivals {
        let a = Arrivals::default();
        let map = a.0.clone();
        tokio::spawn(async move {
            let mut since: Option<String> = None;
            loop {
                let mut path = "/_matrix/client/v3/sync?timeout=10000".to_owned();
                if let Some(s) = &since {
                    path.push_str(&format!("&since={s}"));
                }
                let Ok(v) = user.call("GET", &path, None).await else {
                    continue;
                };
                let now = Instant::now();
                since = v["next_batch"].as_str().map(str::to_owned);
                if let Some(events) = v["rooms"]["join"][room.as_str()]["timeline"]["events"].as_array() {
                    let mut m = map.lock().unwrap();
                    for e in events {
                        if let Some(b) = e["content"]["body"].as_str() {
                            m.entry(b.to_owned()).or_insert(now);
                        }
                    }
                }
            }
        });
        a
    }

    async fn wait(&self, body: &str, timeout: Duration) -> Instant {
        let start = Instant::now();
        loop {
            if let Some(t) = self.0.lock().unwrap().get(body) {
                return *t;
            }
            assert!(start.elapsed() < timeout, "{body:?} never arrived");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

fn pct(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * q).round() as usize]
}

fn rss_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("TGMX_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let burst: usize = std::env::var("TGMX_BENCH_BURST")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let mut app = TestApp::prepare().await;
    let t0 = Instant::now();
    app.start().await;
    let startup = t0.elapsed();
    let pid = app.pid().unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_rss = rss_kb(pid, "VmRSS:");
    let arrivals = Arrivals::start(app.ezra.clone(), app.room.clone());
    let user = app.tg.add_user(7001, "Bench", None, None);
    // Warm-up: puppet registration and join are one-off costs, not per-message ones.
    app.tg.inject_text(app.chat, &user, "warm-up");
    arrivals.wait("warm-up", Duration::from_secs(30)).await;
    app.alex.send_text(&app.room, "warm-up direct").await;
    arrivals.wait("warm-up direct", Duration::from_secs(30)).await;

    // Latency, one message at a time: direct client send vs Telegram -> Matrix.
    let (mut direct, mut bridged) = (Vec::new(), Vec::new());
    for i in 0..n {
        let body = format!("direct {i}");
        let t = Instant::now();
        app.alex.send_text(&app.room, &body).await;
        direct.push(
            arrivals
                .wait(&body, Duration::from_secs(30))
                .await
                .duration_since(t)
                .as_secs_f64()
                * 1000.0,
        );
        let body = format!("bridged {i}");
        let t = Instant::now();
        app.tg.inject_text(app.chat, &user, &body);
        bridged.push(
            arrivals
                .wait(&body, Duration::from_secs(30))
                .await
                .duration_since(t)
                .as_secs_f64()
                * 1000.0,
        );
    }

    // Throughput: n direct sends back to back vs n Telegram messages at once.
    let t = Instant::now();
    for i in 0..n {
        app.alex.send_text(&app.room, &format!("direct tp {i}")).await;
    }
    arrivals
        .wait(&format!("direct tp {}", n - 1), Duration::from_secs(120))
        .await;
    let direct_tp = n as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for i in 0..n {
        app.tg.inject_text(app.chat, &user, &format!("bridged tp {i}"));
    }
    arrivals
        .wait(&format!("bridged tp {}", n - 1), Duration::from_secs(120))
        .await;
    let bridged_tp = n as f64 / t.elapsed().as_secs_f64();

    // Matrix -> Telegram: event sent to the Bot API request, one at a time.
    let mut m2t = Vec::new();
    for i in 0..n {
        let before = app.tg.sent(app.chat).len();
        let t = Instant::now();
        app.ezra.send_text(&app.room, &format!("to telegram {i}")).await;
        while app.tg.sent(app.chat).len() == before {
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        m2t.push(t.elapsed().as_secs_f64() * 1000.0);
    }

    // Burst: all at once, drain time and peak memory.
    let t = Instant::now();
    for i in 0..burst {
        app.tg.inject_text(app.chat, &user, &format!("burst {i}"));
    }
    let mut delivered = 0;
    for i in 0..burst {
        arrivals.wait(&format!("burst {i}"), Duration::from_secs(600)).await;
        delivered += 1;
    }
    let drain = t.elapsed();
    let peak_rss = rss_kb(pid, "VmHWM:");

    let (dp50, dp99) = (pct(&mut direct, 0.5), pct(&mut direct, 0.99));
    let (bp50, bp99) = (pct(&mut bridged, 0.5), pct(&mut bridged, 0.99));
    println!("## tgmx bench ({n} messages per series, burst {burst})\n");
    println!("| figure | tgmx | baseline (direct send, same run) | ratio / overhead |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| Telegram -> Matrix latency p50 | {bp50:.1} ms | {dp50:.1} ms | +{:.1} ms |",
        bp50 - dp50
    );
    println!(
        "| Telegram -> Matrix latency p99 | {bp99:.1} ms | {dp99:.1} ms | +{:.1} ms |",
        bp99 - dp99
    );
    println!(
        "| Telegram -> Matrix throughput | {bridged_tp:.0} msg/s | {direct_tp:.0} msg/s | {:.0}% |",
        100.0 * bridged_tp / direct_tp
    );
    println!(
        "| Matrix -> Telegram (event sent to Bot API request) p50 / p99 | {:.1} / {:.1} ms | - | - |",
        pct(&mut m2t, 0.5),
        pct(&mut m2t, 0.99)
    );
    println!(
        "| burst: delivered, time to drain | {delivered}/{burst}, {:.1} s ({:.0} msg/s) | - | - |",
        drain.as_secs_f64(),
        burst as f64 / drain.as_secs_f64()
    );
    println!(
        "| RSS idle (1 portal) / peak during the burst | {:.1} MB / {:.1} MB | - | - |",
        idle_rss as f64 / 1024.0,
        peak_rss as f64 / 1024.0
    );
    println!(
        "| startup to ready | {:.0} ms | - | - |",
        startup.as_secs_f64() * 1000.0
    );
    app.kill();
    let _: Option<Value> = None;
}
