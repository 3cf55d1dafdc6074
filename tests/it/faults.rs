//! Faults under the daemon (issue 14): a disk that runs full mid-burst, a post whose link cannot
//! be saved, an answer from Telegram that never arrives. Nothing may be lost, nothing posted
//! twice without `tgmx audit` saying so, and no all-clear while it happens.

use std::time::{Duration, Instant};

use crate::harness::{SmallDisk, TestApp, body};

const T: Duration = Duration::from_secs(90);

fn texts(app: &TestApp) -> Vec<String> {
    app.tg.sent(app.chat).into_iter().map(|s| s.text).collect()
}

/// A bridge whose database lives on a small filesystem of its own.
async fn on_small_disk() -> (TestApp, SmallDisk) {
    let mut app = TestApp::prepare().await;
    let disk = SmallDisk::mount(app.dir.join("disk"), 32);
    // The catch-up finds what Conduit holds after a refused push (it never retries by itself).
    app.write_config("  matrix: {catch_up_secs: 5}");
    app.edit_config(|c| c.replace("sqlite://tgmx.db", "sqlite://disk/tgmx.db"));
    app.start().await;
    (app, disk)
}

/// Wait until `/ready` answers 503 with the storage fault, and return its body.
async fn wait_storage_fault(app: &TestApp) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let (status, body) = app.ready().await;
        if body["storage"].as_str().is_some_and(|s| s.starts_with("writes fail")) {
            assert_eq!(status, 503, "{body}");
            return body;
        }
        assert!(
            start.elapsed() < T,
            "/ready never reported the full disk: {status} {body}\n{}",
            app.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_ready(app: &TestApp) {
    let start = Instant::now();
    loop {
        let (status, body) = app.ready().await;
        if status == 200 {
            assert_eq!(body["storage"], "ok", "{body}");
            return;
        }
        assert!(start.elapsed() < T, "/ready stays {status} {body}\n{}", app.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The disk runs full in the middle of a burst both ways and is freed a little later. While it
/// is full the daemon confirms nothing it could not save (no Telegram offset, no homeserver
/// transaction), says so in `/ready`, `/metrics`, `tgmx status` and the log; once space is
/// back every message crosses exactly once, in order, without a restart.
async fn a_full_disk_mid_burst_stops_intake_and_then_everything_crosses_once() {
    let (app, disk) = on_small_disk().await;
    let moss = app.tg.add_user(501, "Moss", None, None);
    app.tg.inject_text(app.chat, &moss, "tg 0");
    app.ezra.send_text(&app.room, "mx 0").await;
    app.wait_from(&app.puppet(501), 1).await;
    app.tg.wait_sent(app.chat, 1, T).await;

    disk.fill();
    for i in 1..=8 {
        app.tg.inject_text(app.chat, &moss, &format!("tg {i}"));
        app.ezra.send_text(&app.room, &format!("mx {i}")).await;
    }
    let ready = wait_storage_fault(&app).await;
    assert_eq!(ready["ready"], false, "{ready}");
    let metrics = app.metrics().await;
    assert!(metrics.contains("tgmx_storage_writes_failing 1"), "{metrics}");
    let (_, status) = app.cli(&["status"]).await;
    assert!(status.contains("database writes: FAIL"), "{status}");
    assert!(status.contains("ready for cutover: no"), "{status}");
    app.wait_log("database writes fail").await;

    disk.free();
    wait_ready(&app).await;
    app.wait_log("database writes work again").await;
    // Sentinels: once they crossed, everything before them was handled.
    app.tg.inject_text(app.chat, &moss, "tg end");
    app.ezra.send_text(&app.room, "mx end").await;

    let want = |side: &str| -> Vec<String> {
        (0..=8)
            .map(|i| format!("{side} {i}"))
            .chain([format!("{side} end")])
            .collect()
    };
    let on_matrix: Vec<String> = app
        .wait_from(&app.puppet(501), 10)
        .await
        .iter()
        .map(|e| body(e).to_owned())
        .collect();
    assert_eq!(on_matrix, want("tg"));
    app.tg.wait_sent(app.chat, 10, T).await;
    let on_telegram = texts(&app);
    let want_tg: Vec<String> = want("mx").iter().map(|t| format!("<b>Ezra</b>: {t}")).collect();
    assert_eq!(on_telegram, want_tg);
    let metrics = app.metrics().await;
    assert!(metrics.contains("tgmx_storage_writes_failing 0"), "{metrics}");
    let (ok, audit) = app.cli(&["audit"]).await;
    assert!(ok, "{audit}");
}

/// Telegram took a post, then the disk ran full before its link was written. The retry writes
/// the link; the message is not posted again (it was, 6 times, before).
async fn a_post_whose_link_cannot_be_saved_is_not_posted_again() {
    let (app, disk) = on_small_disk().await;
    let gate = app.tg.hold_next_answer("sendMessage");
    app.ezra.send_text(&app.room, "posted once").await;
    app.tg.wait_sent(app.chat, 1, T).await;
    disk.fill();
    gate.add_permits(1);
    wait_storage_fault(&app).await;
    disk.free();
    wait_ready(&app).await;
    app.ezra.send_text(&app.room, "after").await;
    app.tg.wait_sent(app.chat, 2, T).await;
    assert_eq!(texts(&app), ["<b>Ezra</b>: posted once", "<b>Ezra</b>: after"]);
    let (ok, audit) = app.cli(&["audit"]).await;
    assert!(ok, "{audit}");
}

/// Telegram posted a message but its answer was lost (the connection broke mid-answer). The Bot
/// API cannot tell whether a post happened, so the bridge posts again rather than risk a loss,
/// and `tgmx audit` names the message that may show twice.
async fn a_post_whose_answer_was_lost_is_posted_again_and_audited() {
    let mut app = TestApp::spawn().await;
    app.tg.lose_next_answers("sendMessage", 1);
    let event = app.ezra.send_text(&app.room, "answer lost").await;
    app.ezra.send_text(&app.room, "after").await;
    app.tg.wait_sent(app.chat, 3, T).await;
    assert_eq!(
        texts(&app),
        [
            "<b>Ezra</b>: answer lost",
            "<b>Ezra</b>: answer lost",
            "<b>Ezra</b>: after"
        ]
    );
    let (ok, audit) = app.cli(&["audit"]).await;
    assert!(!ok, "audit passed over a possible repeat:\n{audit}");
    assert!(audit.contains("may show twice") && audit.contains(&event), "{audit}");
    app.stop();
}

both!(
    a_full_disk_mid_burst_stops_intake_and_then_everything_crosses_once,
    a_post_whose_link_cannot_be_saved_is_not_posted_again,
    a_post_whose_answer_was_lost_is_posted_again_and_audited,
);
