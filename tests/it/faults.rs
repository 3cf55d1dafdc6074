//! Faults under the daemon (issue 14): a disk that runs full mid-burst, a post whose link cannot
//! be saved, an answer from Telegram that never arrives. Nothing may be lost, nothing posted
//! twice without `tgmx audit` saying so, and no all-clear while it happens.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{MxUser, SmallDisk, TestApp, body, eventually};

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
    eventually("/ready to report the storage fault", T, async || {
        let (status, body) = app.ready().await;
        if body["storage"].as_str().is_some_and(|s| s.starts_with("writes fail")) {
            assert_eq!(status, 503, "{body}");
            Ok(body)
        } else {
            Err(format!("{status} {body}\n{}", app.log()))
        }
    })
    .await
}

async fn wait_ready(app: &TestApp) {
    app.wait_ready().await;
    assert_eq!(app.ready().await.1["storage"], "ok");
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

/// Telegram content the bridge cannot fully read (an entity type newer than the bridge, a link
/// the URL parser rejects, a negative offset, a `javascript:` link, a message without `date`, an
/// update that is not a message at all) is carried as far as it can be, never blocks the updates
/// after it, and each case is in `tgmx audit`.
async fn telegram_content_that_does_not_parse_is_carried_as_far_as_it_can_be_and_audited() {
    let app = TestApp::spawn().await;
    let moss = json!({"id": 501, "is_bot": false, "first_name": "Moss"});
    let chat = json!({"id": app.chat, "type": "supergroup", "title": "fleet-ops"});
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    app.tg.inject_update(
        "message",
        json!({"message_id": 7001, "date": now, "chat": chat, "from": moss,
        "text": "deploy now see docs or click",
        "entities": [
            {"type": "bold", "offset": 0, "length": 6},
            {"type": "future_kind", "offset": 7, "length": 3},
            {"type": "text_link", "offset": 11, "length": 3, "url": "http://exa mple.com"},
            {"type": "italic", "offset": -2, "length": 4},
            {"type": "text_link", "offset": 23, "length": 5, "url": "javascript:alert(1)"},
        ]}),
    );
    app.tg.inject_update(
        "message",
        json!({"message_id": 7002, "chat": chat, "from": moss, "text": "no date on this one"}),
    );
    app.tg.inject_update("message", json!(5));
    app.tg.inject_update(
        "message",
        json!({"message_id": 7003, "date": now, "chat": chat, "from": moss, "text": "after"}),
    );

    let from_moss = app.wait_from(&app.puppet(501), 2).await;
    assert_eq!(body(&from_moss[0]), "deploy now see docs or click");
    let html = from_moss[0]["content"]["formatted_body"].as_str().unwrap_or_default();
    assert!(html.contains("<strong>deploy</strong>"), "{html}");
    assert!(!html.contains("javascript"), "{html}");
    assert_eq!(body(&from_moss[1]), "after");
    let notice = app
        .ezra
        .wait_messages(&app.room, 1, T, |e| body(e).contains("no date on this one"))
        .await;
    assert_eq!(notice[0]["sender"], app.bot.as_str());
    assert!(body(&notice[0]).contains("Moss"), "{}", notice[0]);

    let (ok, audit) = app.cli(&["audit"]).await;
    assert!(!ok, "audit passed over content it did not carry:\n{audit}");
    let line = |needle: &str| {
        audit
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_default()
            .to_owned()
    };
    let part = line(&format!("{}:7001", app.chat));
    assert!(part.starts_with("CARRIED IN PART"), "{audit}");
    for what in ["future_kind", "text_link", "italic", "javascript:"] {
        assert!(part.contains(what), "{what} not named:\n{audit}");
    }
    assert!(
        line(&format!("{}:7002", app.chat)).starts_with("CARRIED IN PART"),
        "{audit}"
    );
    assert!(line("unreadable-update").starts_with("NOT DELIVERED"), "{audit}");
    assert!(
        audit.contains("verdict: 1 message(s) not delivered, 2 message(s) carried in part"),
        "{audit}"
    );
}

/// Rooms that are not portals do not keep workers: after the bot was invited to 20 strangers'
/// rooms (and declined), only the portal's lane is left, and the portal still bridges.
async fn rooms_that_are_not_portals_leave_no_lanes_behind() {
    let app = TestApp::spawn().await;
    let stranger = MxUser::register(&format!("stranger{}", app.slot), "Stranger").await;
    let mut rooms = Vec::new();
    for _ in 0..20 {
        rooms.push(stranger.create_room(&[&app.bot]).await);
    }
    // Each invite is declined (the bot leaves): all 20 were handled.
    for room in &rooms {
        eventually(
            &format!("the invite to {room} to be declined"),
            T,
            async || match stranger.member_state(room, &app.bot).await {
                Some(m) if m == "leave" => Ok(()),
                other => Err(format!("membership {other:?}\n{}", app.log())),
            },
        )
        .await;
    }
    app.ezra.send_text(&app.room, "still bridged").await;
    app.tg.wait_sent(app.chat, 1, T).await;
    eventually("at most one lane left", T, async || {
        let metrics = app.metrics().await;
        let lanes: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("tgmx_matrix_lanes "))
            .unwrap_or_else(|| panic!("no lane gauge:\n{metrics}"))
            .parse()
            .unwrap();
        if lanes <= 1 {
            Ok(())
        } else {
            Err(format!("{lanes} lanes running"))
        }
    })
    .await;
}

/// A flood of idle connections at the appservice port neither exhausts the daemon's file
/// descriptors nor stops bridging: at most `MAX_CONNECTIONS` (256) are served at once, and a
/// connection that sends no request is closed after the header timeout (10 s).
async fn idle_connections_are_limited_and_closed() {
    let app = TestApp::spawn().await;
    let fds = |pid: u32| std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
    let pid = app.pid().unwrap();
    let before = fds(pid);
    let mut idle = Vec::new();
    for _ in 0..600 {
        idle.push(tokio::net::TcpStream::connect(("127.0.0.1", app.port)).await.unwrap());
    }
    // The homeserver's own connection waits behind the flood at most one header timeout.
    app.ezra.send_text(&app.room, "through the flood").await;
    let sent = app.tg.wait_sent(app.chat, 1, T).await;
    assert_eq!(sent[0].text, "<b>Ezra</b>: through the flood");
    let during = fds(pid);
    assert!(
        during < before + 256 + 20,
        "the daemon holds {during} descriptors (had {before}) with 600 idle connections"
    );
    // Every idle connection is closed by the daemon (served ones after the timeout, waiting ones
    // once served): reading gives end-of-file.
    let start = Instant::now();
    for sock in &mut idle {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 16];
        let left = T.saturating_sub(start.elapsed());
        let read = tokio::time::timeout(left, sock.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "an idle connection is still open after {:?}",
            start.elapsed()
        );
    }
}

/// A second daemon on the same database is refused before it touches anything, naming the
/// running one.
async fn a_second_daemon_on_the_same_database_is_refused() {
    let app = TestApp::spawn().await;
    let (ok, out) = tokio::time::timeout(T, app.cli(&["run"]))
        .await
        .expect("a second daemon kept running");
    assert!(!ok, "{out}");
    let pid = app.pid().unwrap().to_string();
    assert!(out.contains("another tgmx daemon") && out.contains(&pid), "{out}");
    // The first one is unharmed.
    app.ezra.send_text(&app.room, "still here").await;
    app.tg.wait_sent(app.chat, 1, T).await;
}

/// Deleting the database under the running daemon is noticed: intake stops and `/ready` and the
/// log say what happened, instead of bridging into a file no one will read again.
async fn a_database_deleted_under_the_daemon_stops_intake() {
    let app = TestApp::spawn().await;
    for suffix in ["", "-wal", "-shm"] {
        let mut path = app.db_path().into_os_string();
        path.push(suffix);
        let _ = std::fs::remove_file(path);
    }
    let ready = wait_storage_fault(&app).await;
    assert!(
        ready["storage"].as_str().unwrap().contains("deleted or replaced"),
        "{ready}"
    );
    app.wait_log("deleted or replaced").await;
}

both!(
    a_second_daemon_on_the_same_database_is_refused,
    a_database_deleted_under_the_daemon_stops_intake,
    rooms_that_are_not_portals_leave_no_lanes_behind,
    idle_connections_are_limited_and_closed,
    telegram_content_that_does_not_parse_is_carried_as_far_as_it_can_be_and_audited,
    a_full_disk_mid_burst_stops_intake_and_then_everything_crosses_once,
    a_post_whose_link_cannot_be_saved_is_not_posted_again,
    a_post_whose_answer_was_lost_is_posted_again_and_audited,
);
