//! The cutover plan end to end: modes, announcements, reload, twins (standby and rollback:
//! `standby.rs`).

use std::time::Duration;

use serde_json::Value;

use crate::harness::{TestApp, body, eventually};

const T: Duration = Duration::from_secs(30);

fn to_matrix(cfg: String) -> String {
    cfg.replace("primary_platform: telegram", "primary_platform: matrix")
        .replace("fallback_platform: matrix", "fallback_platform: telegram")
}

async fn cutover_by_sighup_announces_pins_once_and_keeps_mirroring() {
    let mut app = TestApp::spawn().await;
    app.edit_config(to_matrix);
    app.hup();
    let notice = app
        .wait_sent_containing("PRIMARY SURFACE CHANGE: Matrix is now the command channel")
        .await;
    assert!(
        notice.text.contains(&format!("https://matrix.to/#/{}", app.room)),
        "{}",
        notice.text
    );
    assert!(
        app.tg.pinned(app.chat).contains(&notice.message_id),
        "announcement not pinned"
    );
    app.bot_notices("PRIMARY SURFACE CHANGE", 1).await;
    app.wait_log("mode parallel -> cutover").await;

    // Both directions still mirrored.
    let user = app.tg.add_user(2001, "Ash", None, None);
    app.tg.inject_text(app.chat, &user, "fallback still works");
    assert_eq!(
        body(&app.wait_from(&app.puppet(2001), 1).await[0]),
        "fallback still works"
    );
    app.ezra.send_text(&app.room, "matrix is primary").await;
    app.wait_sent_containing("matrix is primary").await;

    // A restart does not announce again.
    app.stop();
    app.start().await;
    app.ezra.send_text(&app.room, "after restart").await;
    app.wait_sent_containing("after restart").await;
    assert_eq!(app.sent_containing("PRIMARY SURFACE CHANGE").len(), 1);
    assert_eq!(app.bot_notices("PRIMARY SURFACE CHANGE", 1).await.len(), 1);
    let (ok, status) = app.cli(&["status"]).await;
    assert!(ok, "{status}");
    assert!(
        status.contains("mode: cutover") && status.contains("parallel -> cutover  (config reload)"),
        "{status}"
    );
}

async fn invalid_config_is_rejected_and_the_old_mode_stays() {
    let app = TestApp::spawn().await;
    let good = std::fs::read_to_string(app.config_path()).unwrap();
    // Broken YAML, noticed by the file watcher.
    std::fs::write(app.config_path(), "gateway: [\n").unwrap();
    app.wait_log("config reload rejected").await;
    // Valid YAML, invalid value, with SIGHUP.
    std::fs::write(
        app.config_path(),
        to_matrix(good.clone()).replace("fallback_platform: telegram", "fallback_platform: matrix"),
    )
    .unwrap();
    app.hup();
    app.wait_log("must differ from primary_platform").await;
    // Still in parallel mode: mirrored, nothing announced.
    app.ezra.send_text(&app.room, "still parallel").await;
    app.wait_sent_containing("still parallel").await;
    assert!(app.sent_containing("PRIMARY SURFACE CHANGE").is_empty());
    // A restart-only key is named; a good file then switches.
    std::fs::write(
        app.config_path(),
        to_matrix(good).replace("poll_timeout: 2", "poll_timeout: 3"),
    )
    .unwrap();
    app.wait_sent_containing("PRIMARY SURFACE CHANGE").await;
    app.wait_log("gateway.telegram.poll_timeout").await;
}

async fn the_same_post_on_both_sides_is_shown_once_per_side() {
    let app = TestApp::spawn().await;
    let op = app.tg.add_user(4242, "Alexander", None, None);

    // Telegram first: bridged as Alexander himself; the Matrix copy is not relayed back.
    let tg_orig = app.tg.inject_text(app.chat, &op, "Deploy  build 42");
    let bridged = app.wait_from(&app.alex.user_id, 1).await[0]["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.alex.send_text(&app.room, "deploy build 42").await;
    eventually("a ✓ on the original", T, async || {
        !app.ezra.reactions(&app.room, &bridged).await.is_empty()
    })
    .await;
    assert_eq!(
        app.ezra.reactions(&app.room, &bridged).await,
        vec![(app.bot.clone(), "✓".to_owned())]
    );
    // The 👌 on Telegram is set after the ✓ on Matrix.
    app.tg
        .wait_until("a 👌 on the telegram original", T, |tg| {
            tg.reactions(app.chat).iter().any(|(m, _)| *m == tg_orig)
        })
        .await;

    // Matrix first: relayed; the Telegram copy is not bridged to Matrix.
    let mx_orig = app.alex.send_text(&app.room, "rotate the keys").await;
    let relayed = app.wait_sent_containing("rotate the keys").await;
    app.tg.inject_text(app.chat, &op, "rotate the keys");
    eventually("a ✓ on the matrix original", T, async || {
        !app.ezra.reactions(&app.room, &mx_orig).await.is_empty()
    })
    .await;
    app.tg
        .wait_until("a 👌 on the relayed copy", T, |tg| {
            tg.reactions(app.chat).iter().any(|(m, _)| *m == relayed.message_id)
        })
        .await;

    // Sync point, then count: each text once per side.
    app.ezra.send_text(&app.room, "sync").await;
    app.wait_sent_containing("sync").await;
    let from_alex: Vec<String> = app
        .ezra
        .messages(&app.room)
        .await
        .iter()
        .filter(|e| e["sender"] == app.alex.user_id.as_str())
        .map(|e| body(e).to_owned())
        .collect();
    assert_eq!(from_alex, ["Deploy  build 42", "deploy build 42", "rotate the keys"]);
    assert!(
        app.sent_containing("build 42").is_empty(),
        "{:#?}",
        app.tg.sent(app.chat)
    );
    assert_eq!(app.sent_containing("rotate the keys").len(), 1);
}

async fn posts_outside_the_window_are_both_mirrored() {
    let mut app = TestApp::prepare().await;
    app.write_config("  dedupe: {enabled: true, window_secs: 1}");
    app.start().await;
    let op = app.tg.add_user(4242, "Alexander", None, None);
    app.tg.inject_text(app.chat, &op, "status?");
    app.wait_from(&app.alex.user_id, 1).await;
    // Not a proof of anything: the same text must come after the 1 s dedupe window, which the
    // daemon measures by the clock.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    app.alex.send_text(&app.room, "status?").await;
    let relayed = app.wait_sent_containing("status?").await;
    assert_eq!(relayed.text, "<b>Alexander</b>: status?");
}

/// A switch made before every room is set up (here: the bot is not yet invited to the second
/// room) is announced in that room too, once the room is set up, not only on Telegram.
async fn a_switch_before_a_room_is_set_up_is_announced_there_once_it_is() {
    let mut app = TestApp::prepare().await;
    let late_room = app.ezra.create_room(&[]).await;
    let late_chat = app.chat - 500;
    app.tg.add_chat(late_chat, "fleet-intel");
    std::fs::write(
        app.config_path(),
        crate::harness::slot_config(
            app.slot,
            app.port,
            &app.hs_url,
            &app.tg.api_url(),
            &[(app.room.clone(), app.chat), (late_room.clone(), late_chat)],
            "",
        ),
    )
    .unwrap();
    app.start().await;
    let (ok, out) = app.cli(&["primary", "matrix"]).await;
    assert!(ok, "{out}");
    app.bot_notices("PRIMARY SURFACE CHANGE", 1).await;
    app.tg
        .wait_until("both chats announced", T, |tg| {
            tg.sent(late_chat)
                .iter()
                .any(|s| s.text.contains("PRIMARY SURFACE CHANGE"))
        })
        .await;
    // Now the second room can be set up.
    app.ezra.invite(&late_room, &app.bot).await;
    let bot = app.bot.clone();
    let is_notice = move |e: &Value| e["sender"] == bot.as_str() && body(e).contains("PRIMARY SURFACE CHANGE");
    app.ezra
        .wait_messages(&late_room, 1, Duration::from_secs(60), &is_notice)
        .await;
    // Once: a message from the chat crosses into the room after the announcement, and the room
    // still has one.
    let user = app.tg.add_user(2003, "Cedar", None, None);
    app.tg.inject_text(late_chat, &user, "after the announcement");
    app.ezra
        .wait_messages(&late_room, 1, T, |e| body(e) == "after the announcement")
        .await;
    let notices: Vec<Value> = app
        .ezra
        .messages(&late_room)
        .await
        .into_iter()
        .filter(|e| is_notice(e))
        .collect();
    assert_eq!(notices.len(), 1, "{notices:#?}");
}

both!(
    a_switch_before_a_room_is_set_up_is_announced_there_once_it_is,
    cutover_by_sighup_announces_pins_once_and_keeps_mirroring,
    invalid_config_is_rejected_and_the_old_mode_stays,
    the_same_post_on_both_sides_is_shown_once_per_side,
    posts_outside_the_window_are_both_mirrored,
);
