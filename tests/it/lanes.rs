//! Lanes and the supervisor: a chat that waits delays only itself, a panic while bridging one
//! message stops neither its lane nor another, and a crashed task is started again and logged.

use std::time::Duration;

use crate::harness::{TestApp, body, slot_config};

const T: Duration = Duration::from_secs(60);

/// A bridge with the usual room and a second one the bot is not invited to yet (its chat is
/// configured but its room cannot be joined). Returns the app, the second room and its chat.
async fn with_a_room_not_joined(env: &[(&str, &str)]) -> (TestApp, String, i64) {
    let mut app = TestApp::prepare().await;
    let late_room = app.ezra.create_room(&[]).await;
    let late_chat = app.chat - 500;
    app.tg.add_chat(late_chat, "fleet-intel");
    let rooms = [(app.room.clone(), app.chat), (late_room.clone(), late_chat)];
    let cfg = slot_config(app.slot, app.port, &app.hs_url, &app.tg.api_url(), &rooms, "");
    std::fs::write(app.config_path(), cfg).unwrap();
    app.env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    app.start().await;
    (app, late_room, late_chat)
}

/// A message in a chat whose room cannot be joined yet waits alone: a later message in another
/// chat crosses meanwhile, and the waiting one crosses once its room is set up.
async fn a_chat_whose_room_is_not_joined_does_not_delay_another_chat() {
    let (app, late_room, late_chat) = with_a_room_not_joined(&[]).await;
    let moss = app.tg.add_user(601, "Moss", None, None);
    app.tg.inject_text(late_chat, &moss, "waits for its room");
    app.tg.inject_text(app.chat, &moss, "crosses meanwhile");
    let got = app.wait_from(&app.puppet(601), 1).await;
    assert_eq!(body(&got[0]), "crosses meanwhile");

    app.ezra.invite(&late_room, &app.bot).await;
    let puppet = app.puppet(601);
    let late = app
        .ezra
        .wait_messages(&late_room, 1, T, move |e| e["sender"] == puppet.as_str())
        .await;
    assert_eq!(body(&late[0]), "waits for its room");
}

/// A panic while bridging one message (a bug) is that message's failure, recorded for the
/// audit: the same chat's next message and another chat's messages still cross.
async fn a_panicking_handler_stops_neither_its_lane_nor_another() {
    let (app, late_room, late_chat) = with_a_room_not_joined(&[("TGMX_FAILPOINTS", "handler-panic")]).await;
    app.ezra.invite(&late_room, &app.bot).await;
    app.wait_ready().await;
    let moss = app.tg.add_user(602, "Moss", None, None);
    app.tg.inject_text(app.chat, &moss, "failpoint:handler-panic");
    app.tg.inject_text(app.chat, &moss, "same chat, after");
    app.tg.inject_text(late_chat, &moss, "other chat");
    let got = app.wait_from(&app.puppet(602), 1).await;
    assert_eq!(body(&got[0]), "same chat, after");
    let puppet = app.puppet(602);
    let other = app
        .ezra
        .wait_messages(&late_room, 1, T, move |e| e["sender"] == puppet.as_str())
        .await;
    assert_eq!(body(&other[0]), "other chat");
    let (ok, audit) = app.cli(&["audit"]).await;
    assert!(!ok, "{audit}");
    assert!(
        audit.contains("panic while bridging: failpoint handler-panic"),
        "{audit}"
    );
}

/// The poller panics once (a failpoint): the supervisor logs it with the task's name, starts
/// it again, and Telegram messages keep crossing.
async fn a_crashed_poller_is_restarted_and_logged() {
    let mut app = TestApp::prepare().await;
    app.env = vec![("TGMX_FAILPOINTS".into(), "poller-panic".into())];
    app.start().await;
    app.wait_log("task crashed: failpoint poller-panic").await;
    assert!(app.log().contains("task=\"telegram poller\""), "{}", app.log());
    let moss = app.tg.add_user(603, "Moss", None, None);
    app.tg.inject_text(app.chat, &moss, "after the crash");
    let got = app.wait_from(&app.puppet(603), 1).await;
    assert_eq!(body(&got[0]), "after the crash");
    let metrics = app.metrics().await;
    assert!(metrics.contains("tgmx_task_restarts_total 1"), "{metrics}");
}

/// A task that cannot run at all (the poller panics each time it starts): restarting cannot
/// help, so after 8 crashes in a row the daemon stops with an error naming the task and a
/// non-zero exit, for the service manager to start it afresh (and someone to notice).
async fn a_task_that_keeps_crashing_stops_the_daemon_with_an_error() {
    let mut app = TestApp::prepare().await;
    app.env = vec![("TGMX_FAILPOINTS".into(), "poller-panic*,fast-restarts".into())];
    app.launch().await;
    let status = app.wait_exit(T).await;
    let log = app.log();
    assert!(!status.success(), "exit {status}: {log}");
    assert!(log.contains("task `telegram poller` crashed 8 times in a row"), "{log}");
    assert_eq!(log.matches("task crashed: failpoint poller-panic").count(), 8, "{log}");
}

both!(
    a_task_that_keeps_crashing_stops_the_daemon_with_an_error,
    a_chat_whose_room_is_not_joined_does_not_delay_another_chat,
    a_panicking_handler_stops_neither_its_lane_nor_another,
    a_crashed_poller_is_restarted_and_logged,
);
