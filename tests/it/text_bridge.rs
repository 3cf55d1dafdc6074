//! Text bridging end to end: real homeservers, fake Bot API, the bridge. The tests that neither
//! kill nor restart it run it inside the test process (`in_process::spawn`); the restart test
//! runs the real daemon binary.

use std::time::Duration;

use serde_json::json;

use crate::harness::{TestApp, body, eventually};
use crate::in_process;

async fn telegram_message_reaches_matrix_as_named_puppet_with_formatting() {
    let app = in_process::spawn().await;
    let user = app.tg.add_user(1001, "Rook", Some("Sentinel"), Some("rook"));
    app.tg.inject_text(app.chat, &user, "status green");
    let bold = json!([{"type": "bold", "offset": 0, "length": 5}, {"type": "code", "offset": 6, "length": 4}]);
    app.tg.inject_message(app.chat, &user, "ALERT x<y>z", bold, None);

    let puppet = app.puppet(1001);
    let msgs = app.wait_from(&puppet, 2).await;
    assert_eq!(body(&msgs[0]), "status green");
    assert_eq!(body(&msgs[1]), "ALERT x<y>z");
    assert_eq!(
        msgs[1]["content"]["formatted_body"],
        "<strong>ALERT</strong> <code>x&lt;y&gt;</code>z"
    );
    assert_eq!(
        app.ezra.member_name(&app.room, &puppet).await.as_deref(),
        Some("Rook Sentinel")
    );
    // Nothing was echoed back to Telegram: a Matrix message sent after the bridged ones is the
    // only one Telegram gets.
    let sentinel = app.sentinel_from_matrix().await;
    assert_eq!(app.tg.sent(app.chat), vec![sentinel], "echo");
}

async fn matrix_message_reaches_telegram_with_sender_name_escaped() {
    let app = in_process::spawn().await;
    app.ezra.send_text(&app.room, "deploy <now> & report").await;
    app.ezra
        .send(
            &app.room,
            json!({"msgtype": "m.text", "body": "**bold**", "format": "org.matrix.custom.html",
            "formatted_body": "<strong>bold</strong> <script>x</script><a href=\"https://e.org\">link</a>"}),
        )
        .await;
    app.ezra
        .send(&app.room, json!({"msgtype": "m.emote", "body": "waves"}))
        .await;
    let sent = app.tg.wait_sent(app.chat, 3, Duration::from_secs(30)).await;
    assert_eq!(sent[0].text, "<b>Ezra</b>: deploy &lt;now&gt; &amp; report");
    assert_eq!(sent[0].parse_mode.as_deref(), Some("HTML"));
    assert_eq!(
        sent[1].text,
        "<b>Ezra</b>: <b>bold</b> <a href=\"https://e.org\">link</a>"
    );
    assert_eq!(sent[2].text, "* <b>Ezra</b> waves");
}

async fn replies_map_both_ways() {
    let app = in_process::spawn().await;
    let user = app.tg.add_user(1002, "Vega", None, None);
    // Telegram original, Matrix reply.
    let tg_orig = app.tg.inject_text(app.chat, &user, "question from telegram");
    let orig_ev = app.wait_from(&app.puppet(1002), 1).await[0]["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.ezra
        .send(
            &app.room,
            json!({"msgtype": "m.text", "body": "> <@x:localhost> question from telegram\n\nanswer from matrix",
            "m.relates_to": {"m.in_reply_to": {"event_id": orig_ev}}}),
        )
        .await;
    let sent = app.tg.wait_sent(app.chat, 1, Duration::from_secs(30)).await;
    assert_eq!(sent[0].reply_to, Some(tg_orig));
    assert_eq!(sent[0].text, "<b>Ezra</b>: answer from matrix");

    // Matrix original, Telegram reply.
    let mx_orig = app.ezra.send_text(&app.room, "question from matrix").await;
    let sent = app.tg.wait_sent(app.chat, 2, Duration::from_secs(30)).await;
    app.tg.inject_message(
        app.chat,
        &user,
        "answer from telegram",
        json!([]),
        Some(sent[1].message_id),
    );
    let msgs = app.wait_from(&app.puppet(1002), 2).await;
    assert_eq!(body(&msgs[1]), "answer from telegram");
    assert_eq!(
        msgs[1]["content"]["m.relates_to"]["m.in_reply_to"]["event_id"],
        mx_orig.as_str()
    );
}

async fn edits_and_redactions_map() {
    let app = in_process::spawn().await;
    let user = app.tg.add_user(1003, "Nova", None, None);
    // Telegram edit -> m.replace.
    let tg_msg = app.tg.inject_text(app.chat, &user, "typo teh");
    let orig = app.wait_from(&app.puppet(1003), 1).await[0]["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.tg.inject_edit(app.chat, tg_msg, "typo the");
    let msgs = app.wait_from(&app.puppet(1003), 2).await;
    let edit = &msgs[1]["content"];
    assert_eq!(edit["m.relates_to"]["rel_type"], "m.replace");
    assert_eq!(edit["m.relates_to"]["event_id"], orig.as_str());
    assert_eq!(edit["m.new_content"]["body"], "typo the");

    // Matrix edit -> editMessageText; redaction -> deleteMessage.
    let ev = app.ezra.send_text(&app.room, "draft").await;
    let sent = app.tg.wait_sent(app.chat, 1, Duration::from_secs(30)).await;
    app.ezra
        .send(
            &app.room,
            json!({"msgtype": "m.text", "body": "* final",
            "m.new_content": {"msgtype": "m.text", "body": "final"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": ev}}),
        )
        .await;
    app.ezra.redact(&app.room, &ev).await;
    // The redaction came after the edit: once it is carried out, so is the edit.
    eventually("the redaction to reach Telegram", Duration::from_secs(30), async || {
        !app.tg.deleted(app.chat).is_empty()
    })
    .await;
    assert_eq!(
        app.tg.edits(app.chat),
        vec![(sent[0].message_id, "<b>Ezra</b>: final".to_owned())]
    );
    assert_eq!(app.tg.deleted(app.chat), vec![sent[0].message_id]);
    // The edit was not sent as a new message.
    assert_eq!(app.tg.sent(app.chat).len(), 1);
}

async fn operator_appears_as_himself_and_nothing_echoes() {
    let app = in_process::spawn().await;
    let op = app.tg.add_user(4242, "Alexander", Some("Op"), None);
    let other = app.tg.add_user(1004, "Orion", None, None);
    app.tg.inject_text(app.chat, &op, "operator speaking on telegram");
    app.tg.inject_text(app.chat, &other, "agent speaking on telegram");
    let from_alex = app.wait_from(&app.alex.user_id, 1).await;
    assert_eq!(body(&from_alex[0]), "operator speaking on telegram");
    app.wait_from(&app.puppet(1004), 1).await;
    // No puppet was made for the operator.
    let members = app.ezra.joined_members(&app.room).await;
    assert!(!members.contains(&app.puppet(4242)), "{members:?}");

    // Sync point: a Matrix message sent after the Telegram ones arrives in Telegram alone (the
    // room's events are relayed in order: an echo of the bridged ones would come before it).
    let marker = app.sentinel_from_matrix().await;
    assert_eq!(app.tg.sent(app.chat), vec![marker], "echo to telegram");
    // And the operator's Matrix messages typed on Matrix are relayed (he is a normal user there).
    app.alex.send_text(&app.room, "operator speaking on matrix").await;
    let sent = app.tg.wait_sent(app.chat, 2, Duration::from_secs(30)).await;
    assert_eq!(sent[1].text, "<b>Alexander</b>: operator speaking on matrix");
    // The Matrix side has exactly the two bridged Telegram messages plus the two typed on Matrix.
    let all = app.ezra.messages(&app.room).await;
    assert_eq!(all.len(), 4, "{all:#?}");
}

async fn restart_mid_stream_loses_and_duplicates_nothing() {
    let mut app = TestApp::spawn().await;
    let user = app.tg.add_user(1005, "Pulse", None, None);
    const N: usize = 40;
    for i in 0..N {
        app.tg.inject_text(app.chat, &user, &format!("tg {i}"));
        app.ezra.send_text(&app.room, &format!("mx {i}")).await;
        if i == N / 4 {
            // Crash while both directions are in flight.
            app.kill();
        }
        if i == N / 2 {
            app.start().await;
        }
        if i == 3 * N / 4 {
            app.stop();
            app.start().await;
        }
    }
    let msgs = app.wait_from(&app.puppet(1005), N).await;
    let sent = app.tg.wait_sent(app.chat, N, Duration::from_secs(60)).await;
    let got: Vec<&str> = msgs.iter().map(body).collect();
    let want: Vec<String> = (0..N).map(|i| format!("tg {i}")).collect();
    assert_eq!(got, want, "telegram -> matrix order or completeness");
    // No duplicate comes later either: once a message sent after them crossed, every one of
    // them was handled.
    let sentinel = app.sentinel_from_telegram(&user).await;
    let msgs_after: Vec<String> = app
        .ezra
        .messages(&app.room)
        .await
        .iter()
        .filter(|e| e["sender"] == app.puppet(1005).as_str())
        .map(|e| body(e).to_owned())
        .collect();
    let mut want_after = want.clone();
    want_after.push(body(&sentinel).to_owned());
    assert_eq!(msgs_after, want_after, "telegram -> matrix duplicates");
    // A repeat counts towards `N`: wait for the last message itself.
    let last = format!("<b>Ezra</b>: mx {}", N - 1);
    app.tg
        .wait_until("the last message", Duration::from_secs(60), |tg| {
            tg.sent(app.chat).iter().any(|s| s.text == last)
        })
        .await;
    let sent_now = app.tg.sent(app.chat);
    let got: Vec<&str> = sent_now.iter().map(|s| s.text.as_str()).collect();
    let want: Vec<String> = (0..N).map(|i| format!("<b>Ezra</b>: mx {i}")).collect();
    // One SIGKILL: it may repeat the message it interrupted, nothing else (`without_crash_repeats`).
    assert_eq!(
        crate::harness::without_crash_repeats(&got, 1),
        want,
        "matrix -> telegram order, completeness or duplicates"
    );
    assert!(sent.len() >= N);
    // The audit agrees: everything delivered (and the sentinel), counted per direction. A kill between a send's
    // intent row and its link leaves a "may show twice" row: every repeat Telegram got must be
    // named there (at most one, for the one kill), and nothing may be undelivered.
    let (ok, out) = app.cli(&["audit", "--since", "1h"]).await;
    assert!(
        out.contains(&format!("tg_to_mx: {} delivered", N + 1)) && out.contains(&format!("mx_to_tg: {N} delivered")),
        "{out}"
    );
    assert!(!out.contains("NOT DELIVERED"), "{out}");
    let repeats = got.len() - N;
    let may_repeat = out.matches("MAY SHOW TWICE").count();
    assert!(
        repeats <= may_repeat && may_repeat <= 1,
        "{repeats} repeat(s) on Telegram, {may_repeat} in the audit:\n{out}"
    );
    if may_repeat == 0 {
        assert!(ok && out.contains("verdict: nothing lost"), "{out}");
    } else {
        assert!(!ok && out.contains("verdict: 1 message(s) may show twice"), "{out}");
    }
}

both!(
    telegram_message_reaches_matrix_as_named_puppet_with_formatting,
    matrix_message_reaches_telegram_with_sender_name_escaped,
    replies_map_both_ways,
    edits_and_redactions_map,
    operator_appears_as_himself_and_nothing_echoes,
    restart_mid_stream_loses_and_duplicates_nothing,
);
