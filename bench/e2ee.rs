//! `cargo bench --bench e2ee`: what encrypted rooms cost. Against real Synapse and the fake Bot
//! API, in one run: 10 Telegram users post into an **encrypted** room (each puppet gets its own
//! device, crypto store and sync loop) and, as the baseline, 10 other users post into a plain
//! room of another daemon. Prints the daemons' RSS and the time to bridge each user's first
//! message (which includes creating the puppet's device in the encrypted case).

#![recursion_limit = "256"]

use std::time::{Duration, Instant};

use serde_json::json;
use tgmx_testkit::harness::{self, TestApp};

const USERS: i64 = 10;

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Post one message per user, each after the previous one arrived; returns the per-message
/// times and the daemon's RSS after a short idle.
async fn run(app: &TestApp, first_user: i64, encrypted: bool) -> (Vec<Duration>, u64) {
    let mut times = Vec::new();
    for u in 0..USERS {
        let id = first_user + u;
        let user = app.tg.add_user(id, &format!("Agent {u}"), None, None);
        let start = Instant::now();
        app.tg.inject_text(app.chat, &user, &format!("report {u}"));
        let puppet = app.puppet(id);
        loop {
            let arrived = app.ezra.events(&app.room).await.iter().any(|e| {
                e["sender"] == puppet.as_str()
                    && e["type"]
                        == if encrypted {
                            "m.room.encrypted"
                        } else {
                            "m.room.message"
                        }
            });
            if arrived {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "message of {puppet} never arrived"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        times.push(start.elapsed());
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    (times, rss_kb(app.pid().unwrap()))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    harness::use_binaries(env!("CARGO_BIN_EXE_tgmx"), option_env!("TGMX_CONDUIT_BIN"));
    let mut enc = TestApp::prepare().await;
    enc.ezra
        .set_state(
            &enc.room,
            "m.room.encryption",
            json!({"algorithm": "m.megolm.v1.aes-sha2"}),
        )
        .await;
    enc.start().await;
    let mut plain = TestApp::spawn().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle_enc = rss_kb(enc.pid().unwrap());
    let idle_plain = rss_kb(plain.pid().unwrap());
    let (t_plain, rss_plain) = run(&plain, 9000, false).await;
    let (t_enc, rss_enc) = run(&enc, 9100, true).await;
    let mb = |kb: u64| kb as f64 / 1024.0;
    println!("## tgmx e2ee bench ({USERS} puppets)\n");
    println!("| figure | encrypted room | plain room (baseline, same run) | ratio |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| RSS before any puppet | {:.1} MB | {:.1} MB | {:.2}x |",
        mb(idle_enc),
        mb(idle_plain),
        idle_enc as f64 / idle_plain as f64
    );
    println!(
        "| RSS with {USERS} puppets, idle | {:.1} MB | {:.1} MB | {:.2}x |",
        mb(rss_enc),
        mb(rss_plain),
        rss_enc as f64 / rss_plain as f64
    );
    println!(
        "| RSS per puppet device | {:.2} MB | - | - |",
        mb(rss_enc.saturating_sub(idle_enc)) / USERS as f64
    );
    let (me, mp) = (median(t_enc.clone()), median(t_plain.clone()));
    println!(
        "| first message of a new user, median | {:.0} ms | {:.0} ms | {:.2}x |",
        me.as_secs_f64() * 1000.0,
        mp.as_secs_f64() * 1000.0,
        me.as_secs_f64() / mp.as_secs_f64()
    );
    println!(
        "| first message of a new user, slowest | {:.0} ms | {:.0} ms | - |",
        t_enc.iter().max().unwrap().as_secs_f64() * 1000.0,
        t_plain.iter().max().unwrap().as_secs_f64() * 1000.0
    );
    enc.stop();
    plain.stop();
}
