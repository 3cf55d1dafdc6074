//! Active/standby with a lease (README "PostgreSQL"): two `tgmx run` processes of one bridge on one
//! PostgreSQL database, each on its own appservice port, behind a failover proxy on the registered
//! port (`tgmx_testkit::pair`). The second one waits as a standby (it takes the homeserver's
//! transactions into the shared inbox, bridges nothing) and takes over when the active one dies or
//! loses its lease connection. Needs PostgreSQL: like `postgres.rs`, the module exists only when
//! build.rs found it (otherwise the build said so once).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{TestApp, body, eventually, http};
use tgmx_testkit::pair::{Instance, Pair};

both!(
    a_standby_takes_over_within_15_s_of_a_sigkill_mid_burst_and_nothing_is_lost_or_doubled,
    an_active_that_loses_its_database_connection_gives_way_within_15_s,
    a_transaction_the_standby_accepts_is_bridged_by_the_active_at_once,
    a_standby_whose_config_was_not_switched_keeps_the_mode_in_force,
    a_second_instance_without_a_name_is_refused,
);

/// The longest a takeover may take (the figure).
pub(crate) const TAKEOVER: Duration = Duration::from_secs(15);
pub(crate) const T: Duration = Duration::from_secs(60);

pub(crate) fn lease_taken(name: &str) -> String {
    format!("lease taken: this instance ({name}) is active")
}

/// A fresh app on PostgreSQL with instances A and B: A started and active (bridge ready), then B
/// started and waiting as a standby (`/health` 200, `/ready` 503 naming its role and name).
async fn active_and_standby() -> (TestApp, Pair) {
    let mut app = TestApp::prepare().await;
    let mut pair = a_active(&mut app).await;
    pair.b.launch();
    pair.b.wait_log("standby: waiting for the lease").await;
    assert_standby(&mut pair.b).await;
    (app, pair)
}

/// `app` moved to a fresh PostgreSQL database and made a pair: A started, active and ready; B
/// not started.
pub(crate) async fn a_active(app: &mut TestApp) -> Pair {
    app.use_postgres();
    let mut pair = Pair::new(app, "A", "B").await;
    pair.a.launch();
    pair.a.wait_log(&lease_taken("A")).await;
    pair.a
        .wait_log_for("bridge ready: every configured room is set up", Duration::from_secs(90))
        .await;
    pair.a.wait_ready_status(200, Duration::from_secs(90)).await;
    pair
}

/// Send SIGHUP to an instance.
fn hup(inst: &mut Instance) {
    let pid = inst.pid().expect("the instance runs");
    assert!(
        std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
}

async fn assert_standby(b: &mut Instance) {
    assert_eq!(b.health().await, 200, "{}", b.log());
    let ready = b.wait_ready_status(503, Duration::from_secs(10)).await;
    assert_eq!(ready["role"], "standby", "{ready}");
    assert_eq!(ready["instance"], b.name.as_str(), "{ready}");
    assert!(!b.log().contains("lease taken"), "{}", b.log());
}

/// Rows of the message map each way: (Telegram -> Matrix, Matrix -> Telegram).
fn crossed(app: &TestApp) -> (usize, usize) {
    let out = app.psql(
        "SELECT count(*) FILTER (WHERE direction = 'tg_to_mx'), count(*) FILTER (WHERE direction = 'mx_to_tg') \
         FROM messages",
    );
    let (a, b) = out.split_once('|').unwrap_or_else(|| panic!("psql said {out:?}"));
    (a.parse().unwrap(), b.parse().unwrap())
}

/// How many items of `got` repeat an earlier one, and how many of `want` are not in `got`.
fn repeats_and_lost(got: &[&str], want: &[String]) -> (usize, usize) {
    let mut seen = std::collections::HashSet::new();
    let repeats = got.iter().filter(|t| !seen.insert(**t)).count();
    let lost = want.iter().filter(|w| !seen.contains(w.as_str())).count();
    (repeats, lost)
}

/// `got` with each immediate repeat taken out.
fn without_immediate_repeats<'a>(got: &[&'a str]) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::with_capacity(got.len());
    for t in got {
        if out.last() != Some(t) {
            out.push(t);
        }
    }
    out
}

async fn a_standby_takes_over_within_15_s_of_a_sigkill_mid_burst_and_nothing_is_lost_or_doubled() {
    let (app, mut pair) = active_and_standby().await;
    const N: usize = 500;
    const AT: usize = 100;
    let user = app.tg.add_user(6001, "Relay", None, None);
    // Both lanes side by side: message i each way, then i + 1. Telegram pacing is off in the test
    // config (`per_chat_per_minute: 0`), as in reliability.rs's crash mid-burst.
    let burst = {
        let (tg, ezra, room, chat, user) = (
            app.tg.clone(),
            app.ezra.clone(),
            app.room.clone(),
            app.chat,
            user.clone(),
        );
        tokio::spawn(async move {
            for i in 0..N {
                tg.inject_text(chat, &user, &format!("tg burst {i}"));
                ezra.send_text(&room, &format!("mx burst {i}")).await;
            }
        })
    };
    eventually(
        &format!("{AT} messages to cross each way through A"),
        Duration::from_secs(120),
        async || match crossed(&app) {
            (tg, mx) if tg >= AT && mx >= AT => Ok(()),
            seen => Err(format!("{seen:?} (telegram -> matrix, matrix -> telegram)")),
        },
    )
    .await;
    let b_pid = pair.b.pid().expect("B runs");
    let killed = Instant::now();
    pair.a.kill();
    let at_kill = crossed(&app);
    assert!(
        at_kill.0 < N && at_kill.1 < N,
        "the burst ended before the kill: {at_kill:?}"
    );

    // B takes the lease, then bridges again each way (the message map grows past what A wrote:
    // after the SIGKILL only B writes).
    pair.b.wait_log_for(&lease_taken("B"), TAKEOVER).await;
    let lease_after = killed.elapsed();
    let (mut tg_after, mut mx_after) = (None, None);
    let (tg_after, mx_after) = eventually(
        "B to bridge a message each way",
        TAKEOVER.saturating_sub(killed.elapsed()),
        async || {
            let now = crossed(&app);
            if tg_after.is_none() && now.0 > at_kill.0 {
                tg_after = Some(killed.elapsed());
            }
            if mx_after.is_none() && now.1 > at_kill.1 {
                mx_after = Some(killed.elapsed());
            }
            match (tg_after, mx_after) {
                (Some(tg), Some(mx)) => Ok((tg, mx)),
                _ => Err(format!(
                    "{now:?} (at the kill: {at_kill:?})\nB's log:\n{}",
                    pair.b.log()
                )),
            }
        },
    )
    .await;
    assert!(
        lease_after < TAKEOVER,
        "B took the lease {lease_after:?} after the kill"
    );
    pair.b.wait_ready_status(200, T).await;
    burst.await.unwrap();

    // Telegram -> Matrix: every message exactly once, in order, and nothing after them but a
    // message sent later.
    let puppet = app.puppet(6001);
    app.ezra
        .wait_messages(&app.room, N, Duration::from_secs(180), {
            let p = puppet.clone();
            move |e: &Value| e["sender"] == p.as_str()
        })
        .await;
    let sentinel = app.sentinel_from_telegram(&user).await;
    let to_matrix: Vec<String> = app
        .ezra
        .messages(&app.room)
        .await
        .iter()
        .filter(|e| e["sender"] == puppet.as_str())
        .map(|e| body(e).to_owned())
        .collect();
    let mut want_mx: Vec<String> = (0..N).map(|i| format!("tg burst {i}")).collect();
    let (mx_repeats, mx_lost) = repeats_and_lost(&to_matrix.iter().map(String::as_str).collect::<Vec<_>>(), &want_mx);

    // Matrix -> Telegram: every message, in order; the one a send interrupted by the SIGKILL may
    // be sent twice (a Telegram send has no idempotency key: README "How it works").
    let last = format!("<b>Ezra</b>: mx burst {}", N - 1);
    app.tg
        .wait_until("the last Matrix message on Telegram", Duration::from_secs(180), |tg| {
            tg.sent(app.chat).iter().any(|s| s.text == last)
        })
        .await;
    let tg_sentinel = app.sentinel_from_matrix().await;
    let sent = app.sent_before(&tg_sentinel);
    let to_telegram: Vec<&str> = sent.iter().map(|s| s.text.as_str()).collect();
    let want_tg: Vec<String> = (0..N).map(|i| format!("<b>Ezra</b>: mx burst {i}")).collect();
    let (tg_repeats, tg_lost) = repeats_and_lost(&to_telegram, &want_tg);

    println!(
        "pair figures ({}): takeover {} ms (kill -> B's lease), first message after the kill {} ms \
         telegram->matrix, {} ms matrix->telegram; lost {mx_lost} telegram->matrix, {tg_lost} \
         matrix->telegram; duplicates {mx_repeats} telegram->matrix, {tg_repeats} matrix->telegram \
         (killed at {} / {} crossed of {N})",
        crate::harness::hs_kind().name(),
        lease_after.as_millis(),
        tg_after.as_millis(),
        mx_after.as_millis(),
        at_kill.0,
        at_kill.1,
    );
    assert!(tg_after < TAKEOVER && mx_after < TAKEOVER);
    want_mx.push(body(&sentinel).to_owned());
    assert_eq!(to_matrix, want_mx, "telegram -> matrix: exactly once, in order");
    assert!(
        tg_repeats <= 1,
        "{tg_repeats} Matrix messages sent to Telegram twice (at most 1)"
    );
    assert_eq!(
        without_immediate_repeats(&to_telegram),
        want_tg,
        "matrix -> telegram: all, in order (a repeat only right after itself)"
    );

    // `tgmx status` names the active instance and the failover.
    let (ok, status) = app.cli(&["status"]).await;
    assert!(ok, "{status}");
    assert!(
        status.contains("instance B: active since") && status.contains(&format!("(pid {b_pid})")),
        "{status}"
    );
    let failovers: Vec<&str> = status
        .lines()
        .skip_while(|l| !l.starts_with("failovers (7 days):"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .collect();
    assert!(
        failovers.iter().any(|l| l.trim_end().ends_with("A -> B")),
        "no failover A -> B listed:\n{status}"
    );
}

async fn an_active_that_loses_its_database_connection_gives_way_within_15_s() {
    let (app, mut pair) = active_and_standby().await;
    let user = app.tg.add_user(6002, "Spark", None, None);
    app.tg.inject_text(app.chat, &user, "through A");
    app.wait_from(&app.puppet(6002), 1).await;

    // Cut A's lease connection. B tries every second, A looks again every 2 s, so B normally
    // takes the lease first; should A take it back first (allowed: the lock was free), it is cut
    // again, until B has it. Each instance's lease connection is named after it.
    assert_eq!(
        pair.lease_holder().as_deref().map(|h| h.starts_with("tgmx A lease")),
        Some(true),
        "A holds the lease: {:?}",
        pair.lease_holder()
    );
    let cut = Instant::now();
    let mut cuts = pair.terminate_lease_connection("A");
    assert_eq!(cuts, 1, "A's lease connection was cut");
    eventually("B to take the lease", TAKEOVER, async || {
        if pair.b.log().contains(&lease_taken("B")) {
            return Ok(());
        }
        let holder = pair.lease_holder();
        if holder.as_deref().is_some_and(|h| h.starts_with("tgmx A lease")) {
            cuts += pair.terminate_lease_connection("A");
        }
        Err(format!(
            "lease holder {holder:?}, {cuts} cut(s) of A's\nB's log:\n{}",
            pair.b.log()
        ))
    })
    .await;
    let takeover = cut.elapsed();
    println!(
        "pair figures ({}): B took the lease {} ms after A's connection was cut ({cuts} cut(s))",
        crate::harness::hs_kind().name(),
        takeover.as_millis()
    );

    // A notices within its 2 s check, finds the lease taken and stops on an error.
    let status = pair.a.wait_exit(TAKEOVER).await;
    assert!(!status.success(), "A exited with {status}:\n{}", pair.a.log());
    let log = pair.a.log();
    let line = log
        .lines()
        .find(|l| l.contains("lost the lease"))
        .unwrap_or_else(|| panic!("no `lost the lease` in A's log:\n{log}"));
    assert!(line.contains("ERROR"), "{line}");
    assert!(
        pair.lease_holder().is_some_and(|h| h.starts_with("tgmx B lease")),
        "{:?}",
        pair.lease_holder()
    );
    pair.b.wait_ready_status(200, T).await;

    // B bridges, each way once.
    app.tg.inject_text(app.chat, &user, "through B");
    app.ezra.send_text(&app.room, "back through B").await;
    app.wait_from(&app.puppet(6002), 2).await;
    app.wait_sent_containing("back through B").await;
    app.sentinel_from_telegram(&user).await;
    app.sentinel_from_matrix().await;
    let puppet = app.puppet(6002);
    let bodies: Vec<String> = app
        .ezra
        .messages(&app.room)
        .await
        .iter()
        .filter(|e| e["sender"] == puppet.as_str() && !body(e).starts_with("sentinel"))
        .map(|e| body(e).to_owned())
        .collect();
    assert_eq!(bodies, ["through A", "through B"], "telegram -> matrix");
    assert_eq!(app.sent_containing("back through B").len(), 1, "matrix -> telegram");
}

/// What the homeserver pushes to the standby is kept in the shared inbox and bridged by the active
/// one at once (it is told: LISTEN/NOTIFY), not when something else wakes it.
async fn a_transaction_the_standby_accepts_is_bridged_by_the_active_at_once() {
    let (app, mut pair) = active_and_standby().await;
    // A reload signal (`systemctl reload` on the standby's host) does not end a standby.
    hup(&mut pair.b);
    pair.b.wait_log("standby: SIGHUP").await;
    let event = json!({
        "type": "m.room.message",
        "sender": app.ezra.user_id,
        "room_id": app.room,
        "event_id": format!("$pair-standby-{}", app.slot),
        "origin_server_ts": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64,
        "content": {"msgtype": "m.text", "body": "pushed to the standby"},
    });
    let accepted = Instant::now();
    let r = http()
        .put(format!("{}/_matrix/app/v1/transactions/pair-standby-1", pair.b.url()))
        .bearer_auth(&app.hs_token)
        .json(&json!({"events": [event]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    app.tg
        .wait_until(
            "the active to bridge what the standby accepted",
            // The active one is told (NOTIFY; figures: 15-150 ms); the bound leaves room for a
            // busy machine and the catch-up lookups right after the start (3 s failed once in CI).
            Duration::from_secs(10),
            |tg| {
                tg.sent(app.chat)
                    .iter()
                    .any(|s| s.text.contains("pushed to the standby"))
            },
        )
        .await;
    println!(
        "pair figures ({}): an event the standby accepted reached Telegram {} ms later",
        crate::harness::hs_kind().name(),
        accepted.elapsed().as_millis()
    );
    // Once, and the standby is still one.
    app.sentinel_from_matrix().await;
    assert_eq!(app.sent_containing("pushed to the standby").len(), 1);
    assert_standby(&mut pair.b).await;
}

/// The operator switched the active instance's file to cutover (a live reload) and forgot the
/// standby's: when the standby takes over, the bridge stays in cutover (no switch back, no
/// announcement), and the new active one says in an ERROR which file disagrees; a reload of its
/// file then applies the file's mode.
async fn a_standby_whose_config_was_not_switched_keeps_the_mode_in_force() {
    let (app, mut pair) = active_and_standby().await;
    let switches = || app.psql("SELECT count(*) FROM mode_switches");
    // A's file is the app's.
    app.edit_config(|c| {
        c.replace("primary_platform: telegram", "primary_platform: matrix")
            .replace("fallback_platform: matrix", "fallback_platform: telegram")
    });
    pair.a.wait_log("config reloaded: mode parallel -> cutover").await;
    let before = switches();
    pair.a.kill();
    pair.b.wait_log_for(&lease_taken("B"), TAKEOVER).await;
    pair.b.wait_ready_status(200, T).await;
    let log = pair.b.log();
    assert!(
        log.contains("this instance's config says mode parallel but the bridge runs in mode cutover"),
        "{log}"
    );
    let (_, ready) = pair.b.ready().await;
    assert_eq!(ready["mode"], "cutover", "{ready}");
    assert_eq!(switches(), before, "no switch was recorded by the takeover");
    // A reload of B's file (unchanged) is what applies it: the operator meant it.
    hup(&mut pair.b);
    pair.b.wait_log("config reloaded: mode cutover -> parallel").await;
    let (_, ready) = pair.b.ready().await;
    assert_eq!(ready["mode"], "parallel", "{ready}");
}

/// A second daemon on the database without an `instance` name would share the first one's
/// encryption devices: it stops with an error naming the key instead of waiting as a standby.
async fn a_second_instance_without_a_name_is_refused() {
    let mut app = TestApp::prepare().await;
    let mut pair = a_active(&mut app).await;
    let text = std::fs::read_to_string(&pair.b.config).unwrap();
    std::fs::write(&pair.b.config, text.replace("instance: \"B\"\n", "")).unwrap();
    pair.b.launch();
    let status = pair.b.wait_exit(T).await;
    assert!(!status.success(), "{}", pair.b.log());
    assert!(
        pair.b.log().contains("`instance`") && pair.b.log().contains("set `instance` to a name of its own"),
        "{}",
        pair.b.log()
    );
    // A is unharmed.
    app.sentinel_from_matrix().await;
}
