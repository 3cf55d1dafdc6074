//! Delivery that does not depend on the homeserver or the Bot API being kind: events the
//! homeserver holds after a failed delivery (Conduit never retries by itself), a quiet chat
//! after long polls longer than teloxide's default client timeout, and an invite that comes
//! before its room is configured.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{TestApp, body, eventually, http};

const T: Duration = Duration::from_secs(60);

fn texts(app: &TestApp) -> Vec<String> {
    app.tg.sent(app.chat).into_iter().map(|s| s.text).collect()
}

/// Matrix messages sent while the daemon is down are held by the homeserver (Conduit sends
/// them only when a later event comes, after 30 s × tries²). `tgmx audit` and `tgmx status`
/// say so and fail; the daemon bridges them within `catch_up_secs` of its start, in order, with
/// no later event, and once.
async fn messages_sent_while_the_daemon_is_down_are_reported_held_and_bridged_at_start() {
    let mut app = TestApp::prepare().await;
    app.write_config("  matrix: {catch_up_secs: 10}");
    app.start().await;
    app.ezra.send_text(&app.room, "before").await;
    app.tg.wait_sent(app.chat, 1, T).await;
    app.stop();

    app.ezra.send_text(&app.room, "while down one").await;
    app.ezra.send_text(&app.room, "while down two").await;
    let (ok, audit) = app.cli(&["audit"]).await;
    assert!(!ok, "audit passed while the homeserver held two messages:\n{audit}");
    assert!(
        audit.contains("HELD BY THE HOMESERVER") && audit.contains("2 event(s) not delivered"),
        "{audit}"
    );
    assert!(audit.contains("verdict: 2 held by the homeserver"), "{audit}");
    let (ok, status) = app.cli(&["status"]).await;
    assert!(ok, "{status}");
    assert!(
        status.contains("ready for cutover: no (2 held by the homeserver"),
        "{status}"
    );

    app.start().await;
    let started = Instant::now();
    let sent = app.tg.wait_sent(app.chat, 3, Duration::from_secs(10)).await;
    assert!(started.elapsed() <= Duration::from_secs(10), "not within catch_up_secs");
    assert_eq!(
        sent.iter().map(|s| s.text.as_str()).collect::<Vec<_>>(),
        [
            "<b>Ezra</b>: before",
            "<b>Ezra</b>: while down one",
            "<b>Ezra</b>: while down two"
        ]
    );
    // A sentinel after them: everything arrives once and in order.
    app.ezra.send_text(&app.room, "after").await;
    app.tg.wait_sent(app.chat, 4, T).await;
    assert_eq!(
        texts(&app),
        [
            "<b>Ezra</b>: before",
            "<b>Ezra</b>: while down one",
            "<b>Ezra</b>: while down two",
            "<b>Ezra</b>: after"
        ]
    );
    let (ok, audit) = app.cli(&["audit"]).await;
    assert!(ok, "{audit}");
    assert!(!audit.contains("HELD BY THE HOMESERVER"), "{audit}");
}

/// A long poll longer than teloxide's default client timeout (17 s) must not fail: after an
/// idle period longer than the poll timeout, a message in a quiet chat is bridged in under 2 s.
async fn a_quiet_chat_is_bridged_promptly_after_long_polls_longer_than_17_s() {
    let mut app = TestApp::prepare().await;
    app.edit_config(|c| c.replace("poll_timeout: 2", "poll_timeout: 20"));
    app.start().await;
    let polls = app.tg.calls("getUpdates");
    // Idle for longer than the poll timeout: the first long poll ends empty, the next one runs.
    app.tg
        .wait_calls("getUpdates", polls + 1, Duration::from_secs(40))
        .await;
    // Not a proof of anything: the message must come in the middle of a long poll, some way into
    // it, which is what this pause gives.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let user = app.tg.add_user(7101, "Quiet", None, None);
    let sent_at = Instant::now();
    app.tg.inject_text(app.chat, &user, "still there?");
    let msgs = app.wait_from(&app.puppet(7101), 1).await;
    let took = sent_at.elapsed();
    assert_eq!(body(&msgs[0]), "still there?");
    assert!(took < Duration::from_secs(2), "bridged after {took:?}");
    assert!(
        !app.log().contains("getUpdates failed"),
        "a long poll failed:\n{}",
        app.log()
    );
}

/// An invite for the bot to a room that is not configured yet stays pending; once the room is
/// added to the config and the config reloaded, the bot joins and the room is bridged, without a
/// second invite.
async fn an_invite_before_the_room_is_configured_is_kept_and_used_on_reload() {
    let app = TestApp::spawn().await;
    let chat2 = app.chat - 500;
    app.tg.add_chat(chat2, "fleet-intel");
    let room2 = app.ezra.create_room(&[&app.bot]).await;
    // The daemon saw the invite (it logs every invite to a room it does not bridge).
    app.wait_log(&room2).await;
    app.edit_config(|c| {
        c.replace(
            "rooms:\n",
            &format!("rooms:\n  - {{matrix: \"{room2}\", telegram: {chat2}}}\n"),
        )
    });
    app.hup();
    eventually("the bot to join the room it was invited to", T, async || {
        let members = app.ezra.joined_members(&room2).await;
        if members.contains(&app.bot) {
            Ok(())
        } else {
            Err(format!("members {members:?}\n{}", app.log()))
        }
    })
    .await;
    app.ezra.send_text(&room2, "intel report").await;
    let sent = app.tg.wait_sent(chat2, 1, T).await;
    assert_eq!(sent[0].text, "<b>Ezra</b>: intel report");
}

/// The bridge's source mark hides a message from Telegram only when a double-puppeted person's
/// event carries it (the bridge's own relayed post); anyone else's message with the mark is
/// bridged like any other.
async fn the_bridge_mark_from_an_ordinary_user_does_not_hide_a_message() {
    let app = TestApp::spawn().await;
    app.ezra
        .send(
            &app.room,
            json!({"msgtype": "m.text", "body": "not an echo", "fi.tgmx.source": {"chat": app.chat, "message": 1}}),
        )
        .await;
    let sent = app.tg.wait_sent(app.chat, 1, T).await;
    assert_eq!(sent[0].text, "<b>Ezra</b>: not an echo");
}

/// Synapse on SQLite numbers its appservice transactions from 1 again after a restart: a known
/// transaction id with new events is bridged, while a real repeat stays a no-op.
async fn a_reused_transaction_id_with_new_events_is_bridged() {
    let app = TestApp::spawn().await;
    let put = |txn: &'static str, event_id: &'static str, text: &'static str| {
        let body = json!({"events": [{
            "type": "m.room.message", "sender": app.ezra.user_id, "room_id": app.room,
            "event_id": event_id, "origin_server_ts": tgmx::storage::now_ms(),
            "content": {"msgtype": "m.text", "body": text}
        }]});
        let url = format!("{}/_matrix/app/v1/transactions/{txn}", app.url());
        let token = app.hs_token.clone();
        async move {
            let r = http().put(url).bearer_auth(token).json(&body).send().await.unwrap();
            assert_eq!(r.status(), 200);
        }
    };
    put("1", "$before-restart", "before the restart").await;
    app.tg.wait_sent(app.chat, 1, T).await;
    put("1", "$before-restart", "before the restart").await; // a real repeat
    put("1", "$after-restart", "after the restart").await; // the same id, renumbered
    app.tg.wait_sent(app.chat, 2, T).await;
    // A sentinel: once it is bridged, a doubled repeat would have been too.
    app.ezra.send_text(&app.room, "sentinel").await;
    app.tg.wait_sent(app.chat, 3, T).await;
    assert_eq!(
        texts(&app),
        ["before the restart", "after the restart", "sentinel"].map(|t| format!("<b>Ezra</b>: {t}"))
    );
}

both!(
    messages_sent_while_the_daemon_is_down_are_reported_held_and_bridged_at_start,
    a_quiet_chat_is_bridged_promptly_after_long_polls_longer_than_17_s,
    an_invite_before_the_room_is_configured_is_kept_and_used_on_reload,
    the_bridge_mark_from_an_ordinary_user_does_not_hide_a_message,
    a_reused_transaction_id_with_new_events_is_bridged,
);
