//! The management room: operators command the bridge from a Matrix client (`!tgmx ...`); the bot
//! answers in reply, refuses anyone else, and bridges nothing of the room.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{MxUser, TestApp, body, eventually};

const T: Duration = Duration::from_secs(60);

/// The bot's answers to the command `command` (an event id) in `room`, at least `n` of them.
async fn answers(app: &TestApp, reader: &MxUser, room: &str, command: &str, n: usize) -> Vec<Value> {
    let (bot, command) = (app.bot.clone(), command.to_owned());
    reader
        .wait_messages(room, n, T, move |e| {
            e["sender"] == bot.as_str()
                && e["content"]["msgtype"] == "m.notice"
                && e["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == command.as_str()
        })
        .await
}

/// `user` sends `text` in `room`; the bot's first answer to it.
async fn ask(app: &TestApp, user: &MxUser, room: &str, text: &str) -> String {
    let command = user.send_text(room, text).await;
    body(&answers(app, user, room, &command, 1).await[0]).to_owned()
}

async fn management_room_commands_from_an_operator_and_from_a_stranger() {
    let mut app = TestApp::prepare().await;
    let (alex, ezra) = (app.alex.clone(), app.ezra.clone());
    // Alexander's room, by alias; Ezra is in it too, but is no operator.
    let alias = format!("#mgmt{}:localhost", app.slot);
    let created = alex
        .call(
            "POST",
            "/_matrix/client/v3/createRoom",
            Some(
                json!({"preset": "private_chat", "room_alias_name": format!("mgmt{}", app.slot),
                "invite": [ezra.user_id], "name": "tgmx admin"}),
            ),
        )
        .await
        .unwrap();
    let mgmt = created["room_id"].as_str().unwrap().to_owned();
    ezra.join(&mgmt).await;
    app.write_config(&format!(
        "  management_room: \"{alias}\"\n  operators: [\"{}\"]",
        alex.user_id
    ));
    app.edit_config(|c| format!("{c}fleet:\n  agents: [\"{}\"]\n", ezra.user_id));
    app.start().await;

    // Not invited yet: the bot says so, and joins on the invite.
    app.wait_log("cannot join the management room yet").await;
    alex.invite(&mgmt, &app.bot).await;
    eventually("the bot to join the management room", T, async || {
        alex.member_state(&mgmt, &app.bot).await.as_deref() == Some("join")
    })
    .await;
    app.wait_log("management room ready").await;

    // A stranger is refused, by name, and logged; nothing changes.
    let before = std::fs::read_to_string(app.config_path()).unwrap();
    let refused = ask(&app, &ezra, &mgmt, "!tgmx primary matrix").await;
    assert!(
        refused.contains("Not allowed") && refused.contains(&ezra.user_id),
        "{refused}"
    );
    let log = app.log();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("management command refused") && l.contains(&ezra.user_id)),
        "no warning naming the stranger:\n{log}"
    );
    assert_eq!(std::fs::read_to_string(app.config_path()).unwrap(), before);

    // Status, as `tgmx status` prints it.
    let status = ask(&app, &alex, &mgmt, "!tgmx status").await;
    assert!(
        status.starts_with("mode: parallel") && status.contains("\nready for cutover: "),
        "{status}"
    );

    // A switch edits the file as `tgmx primary` does, applies at once, and says the new mode.
    let switched = ask(&app, &alex, &mgmt, "!tgmx primary matrix").await;
    assert!(switched.contains("Now mode cutover (was parallel)"), "{switched}");
    let cfg = std::fs::read_to_string(app.config_path()).unwrap();
    assert!(
        cfg.contains("  # the mode under test\n  primary_platform: matrix\n  fallback_platform: telegram\n"),
        "layout kept: {cfg}"
    );
    assert_eq!(
        cfg,
        before
            .replace("primary_platform: telegram", "primary_platform: matrix")
            .replace("fallback_platform: matrix", "fallback_platform: telegram"),
        "only the two values changed"
    );
    app.tg
        .wait_until("the cutover announcement", T, |tg| {
            tg.sent(app.chat)
                .iter()
                .any(|s| s.text.contains("PRIMARY SURFACE CHANGE"))
        })
        .await;
    let (ok, out) = app.cli(&["status"]).await;
    assert!(ok, "{out}");
    assert!(
        out.contains("mode: cutover") && out.contains("parallel -> cutover  (config reload)"),
        "{out}"
    );
    // Once: the file watcher finds nothing more to switch.
    let status = ask(&app, &alex, &mgmt, "!tgmx status").await;
    assert!(status.starts_with("mode: cutover"), "{status}");
    assert_eq!(status.matches("parallel -> cutover").count(), 1, "{status}");

    // Audit, as `tgmx audit --since 24h` prints it.
    let audit = ask(&app, &alex, &mgmt, "!tgmx audit 24h").await;
    assert!(
        audit.starts_with("audit since ") && audit.contains("\nverdict: "),
        "{audit}"
    );

    // Rollcall: acknowledged at once, answered when the agents did.
    let command = alex.send_text(&mgmt, &format!("!tgmx rollcall {} 45s", app.room)).await;
    let started = body(&answers(&app, &alex, &mgmt, &command, 1).await[0]).to_owned();
    assert!(started.contains("waiting up to 45 s for 1 agent"), "{started}");
    let bot = app.bot.clone();
    ezra.wait_messages(&app.room, 1, T, |e| {
        e["sender"] == bot.as_str() && body(e) == "Acknowledge, fleet."
    })
    .await;
    ezra.send_text(&app.room, "present").await;
    let done = answers(&app, &alex, &mgmt, &command, 2).await;
    let result = body(&done[1]);
    assert!(
        result.contains(&format!("ok   {} answered in", ezra.user_id)) && result.contains("1 of 1 agents answered"),
        "{result}"
    );

    // Anything else: the usage.
    let usage = ask(&app, &alex, &mgmt, "!tgmx frobnicate").await;
    assert!(
        usage.contains("unknown command \"frobnicate\"") && usage.contains("!tgmx status"),
        "{usage}"
    );

    // Standby and rollback from the room, as from the command line: commands still work in
    // standby (the management room is no portal, nothing of it is held).
    let standby = ask(&app, &alex, &mgmt, "!tgmx primary matrix --standby").await;
    assert!(standby.contains("Now mode standby (was cutover)"), "{standby}");
    assert!(
        std::fs::read_to_string(app.config_path())
            .unwrap()
            .contains("  primary_platform: matrix\n  fallback_platform: none\n")
    );
    let back = ask(&app, &alex, &mgmt, "!tgmx primary telegram").await;
    assert!(back.contains("Now mode parallel (was standby)"), "{back}");
    assert_eq!(std::fs::read_to_string(app.config_path()).unwrap(), before);

    // Nothing of the management room reached Telegram: chatter there, then a sentinel through
    // the bridged room.
    alex.send_text(&mgmt, "just between us").await;
    app.sentinel_from_matrix().await;
    let leaked: Vec<String> = app
        .tg
        .sent(app.chat)
        .into_iter()
        .map(|s| s.text)
        .filter(|t| t.contains("!tgmx") || t.contains("just between us") || t.contains("Not allowed"))
        .collect();
    assert!(leaked.is_empty(), "{leaked:#?}");
}

both!(management_room_commands_from_an_operator_and_from_a_stranger);

#[cfg(feature = "e2ee")]
mod encrypted {
    use std::sync::{Arc, Mutex};

    use matrix_sdk::config::SyncSettings;
    use matrix_sdk::ruma::OwnedRoomId;
    use matrix_sdk::ruma::events::room::message::{MessageType, OriginalSyncRoomMessageEvent, RoomMessageEventContent};
    use serde_json::json;

    use super::T;
    use crate::harness::{TestApp, eventually};

    /// The operator's own encrypting client sends a command in an encrypted management room
    /// (the operator named by `fleet.operator` only) and reads the bot's encrypted answer.
    async fn an_encrypted_management_room_answers_its_operator() {
        let mut app = TestApp::prepare().await;
        let alex = app.alex.clone();
        let created = alex
            .call(
                "POST",
                "/_matrix/client/v3/createRoom",
                Some(
                    json!({"preset": "private_chat", "invite": [app.bot], "initial_state": [{
                    "type": "m.room.encryption", "state_key": "",
                    "content": {"algorithm": "m.megolm.v1.aes-sha2"}}]}),
                ),
            )
            .await
            .unwrap();
        let mgmt = created["room_id"].as_str().unwrap().to_owned();
        app.write_config(&format!("  management_room: \"{mgmt}\""));
        app.edit_config(|c| format!("{c}fleet:\n  operator: \"{}\"\n", alex.user_id));
        app.start().await;
        app.wait_log("management room ready").await;
        // The bot's device exists before the operator's client shares its room key.
        eventually("the bot to get a device", T, async || {
            let v = alex
                .call(
                    "POST",
                    "/_matrix/client/v3/keys/query",
                    Some(json!({"device_keys": {&app.bot: []}})),
                )
                .await
                .unwrap();
            v["device_keys"][&app.bot].as_object().is_some_and(|d| !d.is_empty())
        })
        .await;

        let (client, _store) = crate::encryption::client_login(&app, &alex.user_id, "element on a phone").await;
        let notices: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let seen = notices.clone();
        client.add_event_handler(move |ev: OriginalSyncRoomMessageEvent| {
            let seen = seen.clone();
            async move {
                if let MessageType::Notice(n) = ev.content.msgtype {
                    seen.lock().unwrap().push((ev.sender.to_string(), n.body));
                }
            }
        });
        client.sync_once(SyncSettings::default()).await.unwrap();
        let c = client.clone();
        let sync = tokio::spawn(async move {
            c.sync(SyncSettings::default().timeout(std::time::Duration::from_secs(5)))
                .await
        });
        let room_id: OwnedRoomId = mgmt.parse().unwrap();
        let room = client.get_room(&room_id).expect("the operator's client knows the room");
        assert!(room.latest_encryption_state().await.unwrap().is_encrypted());

        room.send(RoomMessageEventContent::text_plain("!tgmx status"))
            .await
            .unwrap();
        let status = eventually("the bot's decrypted answer", T, async || {
            let seen = notices.lock().unwrap();
            match seen.iter().find(|(s, _)| *s == app.bot) {
                Some((_, b)) => Ok(b.clone()),
                None => Err(format!("{seen:?}")),
            }
        })
        .await;
        assert!(
            status.starts_with("mode: parallel") && status.contains("ready for cutover"),
            "{status}"
        );
        // The answer went out encrypted.
        let from_bot: Vec<String> = alex
            .events(&mgmt)
            .await
            .into_iter()
            .filter(|e| e["sender"] == app.bot.as_str() && e.get("state_key").is_none())
            .map(|e| e["type"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert!(
            !from_bot.is_empty() && from_bot.iter().all(|t| t == "m.room.encrypted"),
            "{from_bot:?}"
        );
        sync.abort();
    }

    both!(an_encrypted_management_room_answers_its_operator);
}
