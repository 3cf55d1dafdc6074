//! Forum topics (issue 17, point 3): a supergroup with topics feeds a room per configured topic
//! (`rooms[].telegram_topic`) and the chat's room gets the rest, each message naming its topic;
//! sends carry `message_thread_id`; topic creation and renaming are told; a forum bridged by
//! topic rooms only ignores its other topics, with a row for `tgmx audit`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{TestApp, body, eventually};

both!(
    a_forum_feeds_a_room_per_topic_and_the_chats_room_shows_the_other_topics,
    a_forum_bridged_by_topic_rooms_only_audits_what_it_ignores,
);

const T: Duration = Duration::from_secs(60);

/// The first message in `room` whose body is `text` (waited for).
async fn wait_body(app: &TestApp, room: &str, text: &str) -> Value {
    let found = app.ezra.wait_messages(room, 1, T, |e| body(e) == text).await;
    found[0].clone()
}

/// A room of Ezra's with the bridge bot invited, added to the config for topic `topic` of the
/// test's chat.
async fn topic_room(app: &TestApp, topic: i32) -> String {
    let room = app.ezra.create_room(&[&app.bot]).await;
    let chat = app.chat;
    app.edit_config(|c| {
        c.replace(
            "rooms:\n",
            &format!("rooms:\n  - {{matrix: \"{room}\", telegram: {chat}, telegram_topic: {topic}}}\n"),
        )
    });
    room
}

async fn a_forum_feeds_a_room_per_topic_and_the_chats_room_shows_the_other_topics() {
    let mut app = TestApp::prepare().await;
    let chat = app.chat;
    app.tg.add_forum(chat, "fleet-ops");
    let pat = app.tg.add_user(77, "Pat", None, None);
    let deploys = app.tg.create_topic(chat, &pat, "Deploys");
    let intel = app.tg.create_topic(chat, &pat, "Intel");
    app.write_config("");
    let deploys_room = topic_room(&app, deploys).await;
    app.start().await;

    // Telegram -> Matrix: a mapped topic to its room, as it is; another topic to the chat's
    // room, naming its topic; the General topic to the chat's room, as it is.
    app.tg.inject_topic_text(chat, deploys, &pat, "deploy 42 done");
    let in_topic_room = wait_body(&app, &deploys_room, "deploy 42 done").await;
    assert_eq!(in_topic_room["sender"], app.puppet(77).as_str());
    app.tg.inject_topic_text(chat, intel, &pat, "intel report");
    let shown = wait_body(&app, &app.room, "[Intel] intel report").await;
    assert_eq!(shown["sender"], app.puppet(77).as_str());
    app.tg.inject_text(chat, &pat, "general chatter");
    wait_body(&app, &app.room, "general chatter").await;
    // The topic created before the bridge read it was told in the room that shows it.
    wait_body(&app, &app.room, "Pat created the topic “Intel”").await;
    let chats_room = app.ezra.messages(&app.room).await;
    assert!(
        !chats_room.iter().any(|e| body(e).contains("deploy 42")),
        "a mapped topic's message reached the chat's room too: {chats_room:?}"
    );

    // Matrix -> Telegram: the topic's room posts in its topic; the chat's room in General, and
    // a reply to a message of another topic in that topic.
    app.ezra.send_text(&deploys_room, "rolling back 42").await;
    app.ezra.send_text(&app.room, "to everyone").await;
    let reply = app
        .ezra
        .send(
            &app.room,
            json!({
                "msgtype": "m.text",
                "body": "> <@x:localhost> intel report\n\nnoted",
                "m.relates_to": {"m.in_reply_to": {"event_id": shown["event_id"]}},
            }),
        )
        .await;
    assert!(!reply.is_empty());
    app.sentinel_from_matrix().await;
    let in_deploys: Vec<String> = app
        .tg
        .sent_in_topic(chat, Some(deploys))
        .into_iter()
        .map(|s| s.text)
        .collect();
    assert_eq!(in_deploys, vec!["<b>Ezra</b>: rolling back 42"]);
    let in_general: Vec<String> = app.tg.sent_in_topic(chat, None).into_iter().map(|s| s.text).collect();
    assert!(
        in_general.contains(&"<b>Ezra</b>: to everyone".to_owned()),
        "{in_general:?}"
    );
    let in_intel = app.tg.sent_in_topic(chat, Some(intel));
    assert_eq!(in_intel.len(), 1, "{in_intel:?}");
    assert!(in_intel[0].text.ends_with("noted"), "{in_intel:?}");
    assert!(in_intel[0].reply_to.is_some(), "{in_intel:?}");

    // A topic renamed: told, and its next messages carry the new name. A new topic: told.
    app.tg.edit_topic(chat, &pat, intel, "Intel (EU)");
    wait_body(&app, &app.room, "Pat renamed the topic “Intel” to “Intel (EU)”").await;
    app.tg.inject_topic_text(chat, intel, &pat, "second report");
    wait_body(&app, &app.room, "[Intel (EU)] second report").await;
    let ops = app.tg.create_topic(chat, &pat, "Ops");
    wait_body(&app, &app.room, "Pat created the topic “Ops”").await;
    app.tg.inject_topic_text(chat, ops, &pat, "ops online");
    wait_body(&app, &app.room, "[Ops] ops online").await;

    // Nothing reached Telegram's General topic from the topic room, nothing is failed.
    let (ok, audit) = app.cli(&["audit", "--since", "1h"]).await;
    assert!(ok, "{audit}");
}

async fn a_forum_bridged_by_topic_rooms_only_audits_what_it_ignores() {
    let mut app = TestApp::prepare().await;
    let chat = app.chat;
    app.tg.add_forum(chat, "fleet-ops");
    let pat = app.tg.add_user(77, "Pat", None, None);
    let deploys = app.tg.create_topic(chat, &pat, "Deploys");
    let chatter = app.tg.create_topic(chat, &pat, "Chatter");
    // Only the Deploys topic is bridged, to the test's room.
    app.write_config("");
    let room = app.room.clone();
    app.edit_config(|c| {
        c.replace(
            &format!("{{matrix: \"{room}\", telegram: {chat}}}"),
            &format!("{{matrix: \"{room}\", telegram: {chat}, telegram_topic: {deploys}}}"),
        )
    });
    app.start().await;

    app.tg.inject_topic_text(chat, chatter, &pat, "chatter, not bridged");
    app.tg.inject_text(chat, &pat, "general, not bridged");
    // The sentinel: a later message of the bridged topic (the chat's messages go in order).
    app.tg.inject_topic_text(chat, deploys, &pat, "deploys sentinel");
    wait_body(&app, &room, "deploys sentinel").await;
    let seen = app.ezra.messages(&room).await;
    assert!(
        !seen.iter().any(|e| body(e).contains("not bridged")),
        "an unmapped topic reached the room: {seen:?}"
    );

    // Matrix -> Telegram: into the topic.
    let sent = app.sentinel_from_matrix().await;
    assert_eq!(sent.thread, Some(deploys), "{sent:?}");

    // What was ignored is listed by the audit, naming the topic.
    eventually("the audit to count the ignored messages", T, async || {
        let (ok, audit) = app.cli(&["audit", "--since", "1h"]).await;
        // Listed as ignored by the config, not counted as lost: the audit passes.
        let rows = audit.matches("IGNORED (config)").count();
        if ok
            && rows == 2
            && audit.contains(&format!("topic {chatter} of chat {chat}"))
            && audit.contains("the General topic")
        {
            Ok(())
        } else {
            Err(audit)
        }
    })
    .await;
}
