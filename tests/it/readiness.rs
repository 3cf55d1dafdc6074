//! The readiness gates of `tgmx status` (issue 18 point 4): each fails, then passes, with its
//! evidence; `tgmx check` names a chat where the bot may not pin the cutover notice; and
//! `gateway.matrix.enabled: false` holds Telegram messages in the inbox instead of losing them.

use std::time::Duration;

use serde_json::json;

use crate::harness::{TestApp, eventually};

const T: Duration = Duration::from_secs(60);

/// The gate line of `name` in `tgmx status`.
fn gate<'a>(status: &'a str, name: &str) -> &'a str {
    status
        .lines()
        .find(|l| l.contains(&format!(" {name}: ")))
        .unwrap_or_else(|| panic!("no gate {name:?} in:\n{status}"))
}

async fn status(app: &TestApp) -> String {
    let (_, out) = app.cli(&["status"]).await;
    out
}

/// Wait until the gate `name` reads `ok` (true) or `FAIL`, and return its line.
async fn wait_gate(app: &TestApp, name: &str, ok: bool) -> String {
    eventually(&format!("the gate {name:?} to read ok={ok}"), T, async || {
        let s = status(app).await;
        let l = gate(&s, name).to_owned();
        if l.trim_start().starts_with(if ok { "ok" } else { "FAIL" }) {
            Ok(l)
        } else {
            Err(s)
        }
    })
    .await
}

/// Run `tgmx rollcall` in the background; returns its output when done.
fn rollcall(app: &TestApp, timeout: &str) -> tokio::task::JoinHandle<std::process::Output> {
    let config = app.config_path();
    let timeout = timeout.to_owned();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(crate::harness::tgmx_bin())
            .args(["rollcall", "--timeout", &timeout, "-c"])
            .arg(config)
            .env("TGMX_TELEGRAM_TOKEN", crate::harness::TG_TOKEN)
            .env("TGMX_PICKLE_KEY", "test-pickle-key")
            .output()
            .unwrap()
    })
}

const ROLLCALL: &str = "the last rollcall answered by fleet.min_agents agents";
const OPERATOR: &str = "the operator wrote in an encrypted room from Matrix";
const FILES: &str = "a voice message or file crossed each way in 7 days";

async fn readiness_gates_fail_and_pass_one_by_one() {
    let mut app = TestApp::prepare().await;
    // Ezra is the operator; Ezra and Alexander (mapped to Telegram user 4242) are the agents.
    let fleet = format!(
        "fleet:\n  operator: \"{}\"\n  agents: [\"{}\", \"{}\"]\n  min_agents: 2\n",
        app.ezra.user_id, app.ezra.user_id, app.alex.user_id
    );
    app.edit_config(|c| c.replace("logging:", &format!("{fleet}logging:")));
    app.start().await;
    app.ezra.send_text(&app.room, "plain words").await;
    app.tg
        .wait_until("the plain message on Telegram", T, |tg| {
            tg.sent(app.chat).iter().any(|s| s.text.ends_with("plain words"))
        })
        .await;

    // Every gate that needs something done says what.
    let s = eventually("status to count the plain message", T, async || {
        let s = status(&app).await;
        if s.contains("matrix->telegram 1") {
            Ok(s)
        } else {
            Err(s)
        }
    })
    .await;
    assert!(
        gate(&s, "every room linked").contains("ok   every room linked: 1 of 1 linked"),
        "{s}"
    );
    assert!(
        gate(&s, "nothing stuck or failed").trim_start().starts_with("ok"),
        "{s}"
    );
    assert!(
        gate(&s, ROLLCALL).contains("FAIL") && gate(&s, ROLLCALL).contains("no rollcall yet (need 2)"),
        "{s}"
    );
    let op = gate(&s, OPERATOR);
    assert!(
        op.contains("FAIL") && op.contains("from an encrypted room has crossed to telegram yet"),
        "{s}"
    );
    let files = gate(&s, FILES);
    assert!(
        files.contains("FAIL") && files.contains("telegram->matrix: none") && files.contains("matrix->telegram: none"),
        "{s}"
    );
    assert!(
        s.contains("ready for cutover: no") && s.contains("gate failed: "),
        "{s}"
    );

    // A voice message from Telegram: one way only, still failing.
    let wren = app.tg.add_user(6101, "Wren", None, None);
    app.tg.inject_voice(app.chat, &wren, vec![7u8; 3000], 2);
    app.wait_from(&app.puppet(6101), 1).await;
    let files = wait_gate(&app, FILES, false).await;
    let s = eventually("the voice message in the gate's evidence", T, async || {
        let s = status(&app).await;
        if gate(&s, FILES).contains("telegram->matrix: voice") {
            Ok(s)
        } else {
            Err(s)
        }
    })
    .await;
    assert!(gate(&s, FILES).contains("matrix->telegram: none"), "{files}\n{s}");
    // A file from Matrix: both ways now.
    let url = app.ezra.upload(vec![9u8; 5000], "application/zip", "logs.zip").await;
    app.ezra
        .send(
            &app.room,
            json!({"msgtype": "m.file", "body": "logs.zip", "url": url, "info": {"mimetype": "application/zip", "size": 5000}}),
        )
        .await;
    let files = wait_gate(&app, FILES, true).await;
    assert!(
        files.contains("telegram->matrix: voice") && files.contains("matrix->telegram: file"),
        "{files}"
    );

    // A rollcall only Ezra answers: 1 of 2.
    let roll = rollcall(&app, "6s");
    let bot = app.bot.clone();
    app.ezra
        .wait_messages(&app.room, 1, T, move |e| {
            e["sender"] == bot.as_str() && crate::harness::body(e) == "Acknowledge, fleet."
        })
        .await;
    app.ezra.send_text(&app.room, "Ezra here").await;
    let out = roll.await.unwrap();
    assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let line = wait_gate(&app, ROLLCALL, false).await;
    assert!(
        line.contains("1 of 2 answered") && line.contains(&format!("{} on matrix", app.ezra.user_id)),
        "{line}"
    );
    assert!(line.contains("and telegram chat"), "asked on Telegram too: {line}");

    // Ezra answers on Matrix, Alexander on Telegram (as user 4242, mapped to his account).
    let asked_before = app
        .tg
        .sent(app.chat)
        .iter()
        .filter(|s| s.text == "Acknowledge, fleet.")
        .count();
    assert_eq!(asked_before, 1, "the first rollcall asked on Telegram once");
    let roll = rollcall(&app, "60s");
    let chat = app.chat;
    app.tg
        .wait_until("the second question on Telegram", T, |tg| {
            tg.sent(chat).iter().filter(|s| s.text == "Acknowledge, fleet.").count() == 2
        })
        .await;
    let alex_tg = app.tg.add_user(4242, "Alexander", None, None);
    app.tg.inject_text(app.chat, &alex_tg, "Alexander here, on Telegram");
    app.ezra.send_text(&app.room, "Ezra again").await;
    let out = roll.await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let line = wait_gate(&app, ROLLCALL, true).await;
    assert!(line.contains("2 of 2 answered"), "{line}");
    assert!(line.contains(&format!("{} on telegram", app.alex.user_id)), "{line}");
    assert!(line.contains(&format!("{} on matrix", app.ezra.user_id)), "{line}");

    operator_in_an_encrypted_room(&app).await;
}

/// The operator's gate passes once a message of theirs crossed from an encrypted room (the
/// plain one above did not count); then every gate passes and the verdict is "ready".
#[cfg(feature = "e2ee")]
async fn operator_in_an_encrypted_room(app: &TestApp) {
    use matrix_sdk::config::SyncSettings;
    use matrix_sdk::ruma::events::room::message::RoomMessageEventContent;
    app.encrypt_room().await;
    eventually("the bot to get a device", T, async || {
        let v = app
            .ezra
            .call(
                "POST",
                "/_matrix/client/v3/keys/query",
                Some(json!({"device_keys": {app.bot.as_str(): []}})),
            )
            .await
            .unwrap();
        v["device_keys"][app.bot.as_str()]
            .as_object()
            .is_some_and(|m| !m.is_empty())
    })
    .await;
    let (client, _store) = crate::encryption::client_login(app, &app.ezra.user_id, "element stand-in").await;
    client.sync_once(SyncSettings::default()).await.unwrap();
    let room = client
        .get_room(&app.room.parse::<matrix_sdk::ruma::OwnedRoomId>().unwrap())
        .expect("ezra's client knows the room");
    room.send(RoomMessageEventContent::text_plain("encrypted orders"))
        .await
        .unwrap();
    let line = wait_gate(app, OPERATOR, true).await;
    assert!(
        line.contains(&format!("{} in {}", app.ezra.user_id, app.room)),
        "{line}"
    );
    let s = status(app).await;
    assert!(s.contains("ready for cutover: yes"), "{s}");
}

#[cfg(not(feature = "e2ee"))]
async fn operator_in_an_encrypted_room(_app: &TestApp) {}

/// `tgmx check` says whether the bot may pin the cutover notice in each chat.
async fn check_names_a_chat_where_the_bot_may_not_pin() {
    let app = TestApp::spawn().await;
    let (ok, out) = app.cli(&["check"]).await;
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("ok   bot may pin messages in {}", app.chat)),
        "{out}"
    );
    app.tg.set_admin(app.tg.bot_user().id, app.chat, false);
    let (ok, out) = app.cli(&["check"]).await;
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!(
            "FAIL bot may pin messages in {} (the cutover notice is pinned)",
            app.chat
        )) && out.contains("with the right to pin messages"),
        "{out}"
    );
}

/// `gateway.matrix.enabled: false`: Telegram messages are not relayed to Matrix; they wait in the
/// inbox (status and audit say so, never silence) while Matrix -> Telegram goes on, and cross in
/// order once it is true again.
async fn matrix_disabled_holds_telegram_messages_until_enabled() {
    let mut app = TestApp::prepare().await;
    app.write_config("  matrix:\n    enabled: false");
    app.start().await;
    let wren = app.tg.add_user(6201, "Wren", None, None);
    app.tg.inject_text(app.chat, &wren, "held one");
    app.tg.inject_text(app.chat, &wren, "held two");
    // Both stored, neither bridged: they wait in the inbox (bridged items leave it).
    let s = eventually("status to count the held updates", T, async || {
        let s = status(&app).await;
        if s.contains("telegram->matrix paused (gateway.matrix.enabled: false): 2 update(s) from telegram wait") {
            Ok(s)
        } else {
            Err(s)
        }
    })
    .await;
    assert!(s.contains("ready for cutover: no"), "{s}");
    assert!(!s.contains("a queue is stuck"), "{s}");
    let (ok, audit) = app.cli(&["audit"]).await;
    assert!(!ok, "{audit}");
    assert!(audit.contains("HELD telegram->matrix paused"), "{audit}");
    // Matrix -> Telegram goes on meanwhile.
    app.sentinel_from_matrix().await;
    let puppet = app.puppet(6201);
    assert!(
        app.ezra
            .messages(&app.room)
            .await
            .iter()
            .all(|e| e["sender"] != puppet.as_str()),
        "relayed while gateway.matrix.enabled is false"
    );

    app.edit_config(|c| c.replace("  matrix:\n    enabled: false", "  matrix:\n    enabled: true"));
    let got = app.wait_from(&puppet, 2).await;
    let bodies: Vec<&str> = got.iter().map(crate::harness::body).collect();
    assert_eq!(bodies, ["held one", "held two"]);
    eventually("the inbox to be empty", T, async || {
        let s = status(&app).await;
        if s.contains("waiting: 0 from telegram") && !s.contains("paused") {
            Ok(())
        } else {
            Err(s)
        }
    })
    .await;
}

both!(
    readiness_gates_fail_and_pass_one_by_one,
    check_names_a_chat_where_the_bot_may_not_pin,
    matrix_disabled_holds_telegram_messages_until_enabled,
);
