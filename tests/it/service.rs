//! Telegram service messages (joins, leaves, kicks, title, pins, contentless ones), room details
//! both ways, and the member listing of `tgmx status`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{TestApp, body, eventually};
use crate::in_process;

/// Some bytes standing in for an image (neither side decodes them).
fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Give the bridge bot power 100 in the test room (it needs it to set room state and kick).
async fn give_bot_power(app: &TestApp) {
    let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.power_levels/", app.room);
    let mut levels = app.ezra.call("GET", &path, None).await.unwrap();
    levels["users"][app.bot.as_str()] = json!(100);
    app.ezra.set_state(&app.room, "m.room.power_levels", levels).await;
}

/// The room's current state event of `event_type` (empty state key), as Ezra sees it.
async fn state(app: &TestApp, event_type: &str) -> Option<Value> {
    let path = format!("/_matrix/client/v3/rooms/{}/state/{event_type}/", app.room);
    app.ezra.call("GET", &path, None).await.ok()
}

/// The newest `m.room.member` event about `user` in the timeline.
async fn last_member_event(app: &TestApp, user: &str) -> Value {
    app.ezra
        .events(&app.room)
        .await
        .into_iter()
        .rev()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == user)
        .unwrap_or_default()
}

/// Wait until `user`'s membership in the room is `membership`.
async fn wait_membership(app: &TestApp, user: &str, membership: &str) {
    eventually(
        &format!("{user} to be {membership}"),
        Duration::from_secs(30),
        async || {
            let now = app.ezra.member_state(&app.room, user).await;
            if now.as_deref() == Some(membership) {
                Ok(())
            } else {
                Err(format!("{now:?}\n{}", app.log()))
            }
        },
    )
    .await
}

async fn telegram_join_and_leave_become_puppet_membership_and_a_kick_shows_as_a_kick() {
    let app = in_process::spawn().await;
    give_bot_power(&app).await;
    let rook = app.tg.add_user(5101, "Rook", None, None);
    let vega = app.tg.add_user(5102, "Vega", None, None);
    let puppet = app.puppet(5101);

    // Rook joins: the puppet joins.
    app.tg
        .inject_service(app.chat, &rook, json!({"new_chat_members": [rook.to_json()]}));
    wait_membership(&app, &puppet, "join").await;

    // Rook leaves by himself: the puppet leaves, saying so.
    app.tg
        .inject_service(app.chat, &rook, json!({"left_chat_member": rook.to_json()}));
    wait_membership(&app, &puppet, "leave").await;
    let left = last_member_event(&app, &puppet).await;
    assert_eq!(left["sender"], puppet.as_str(), "{left}");
    assert_eq!(left["content"]["reason"], "left the Telegram group", "{left}");

    // Vega adds him again, then removes him: a kick by the bot naming Vega.
    app.tg
        .inject_service(app.chat, &vega, json!({"new_chat_members": [rook.to_json()]}));
    wait_membership(&app, &puppet, "join").await;
    app.tg
        .inject_service(app.chat, &vega, json!({"left_chat_member": rook.to_json()}));
    wait_membership(&app, &puppet, "leave").await;
    let kicked = last_member_event(&app, &puppet).await;
    assert_eq!(kicked["sender"], app.bot.as_str(), "a kick is the bot's: {kicked}");
    assert_eq!(
        kicked["content"]["reason"], "removed from the Telegram group by Vega",
        "{kicked}"
    );

    // None of it became a message.
    let sentinel = app.sentinel_from_telegram(&vega).await;
    let msgs = app.ezra.messages(&app.room).await;
    assert_eq!(msgs.len(), 1, "only the sentinel: {msgs:?}");
    assert_eq!(msgs[0]["event_id"], sentinel["event_id"]);
}

async fn telegram_title_becomes_the_room_name_and_matrix_details_reach_telegram_only_when_switched_on() {
    let app = in_process::spawn().await;
    give_bot_power(&app).await;
    let rook = app.tg.add_user(5201, "Rook", None, None);

    app.tg
        .inject_service(app.chat, &rook, json!({"new_chat_title": "Ops, renamed on Telegram"}));
    eventually("the room name from Telegram", Duration::from_secs(30), async || {
        let name = state(&app, "m.room.name").await;
        if name.as_ref().is_some_and(|n| n["name"] == "Ops, renamed on Telegram") {
            Ok(())
        } else {
            Err(format!("{name:?}\n{}", app.log()))
        }
    })
    .await;

    // Switch off (the default): a Matrix rename stays on Matrix.
    app.ezra
        .set_state(&app.room, "m.room.name", json!({"name": "Renamed on Matrix"}))
        .await;
    app.sentinel_from_matrix().await;
    assert_eq!(app.tg.calls("setChatTitle"), 0, "switch off: nothing sent");

    // Switch on: a Matrix rename and topic reach Telegram; the bridge's own rename (from the
    // next Telegram title) does not come back.
    let chat = app.chat;
    app.edit_config(|c| {
        c.replacen(
            &format!("telegram: {chat}}}"),
            &format!("telegram: {chat}, sync_details_to_telegram: true}}"),
            1,
        )
    });
    app.wait_log("config reloaded").await;
    app.tg
        .inject_service(app.chat, &rook, json!({"new_chat_title": "Ops, again from Telegram"}));
    eventually(
        "the second room name from Telegram",
        Duration::from_secs(30),
        async || {
            let name = state(&app, "m.room.name").await;
            if name.as_ref().is_some_and(|n| n["name"] == "Ops, again from Telegram") {
                Ok(())
            } else {
                Err(format!("{name:?}"))
            }
        },
    )
    .await;
    app.ezra
        .set_state(&app.room, "m.room.name", json!({"name": "Fleet ops (Matrix)"}))
        .await;
    app.ezra
        .set_state(&app.room, "m.room.topic", json!({"topic": "Where the fleet talks"}))
        .await;
    app.tg
        .wait_until("the title and description on Telegram", Duration::from_secs(30), |tg| {
            tg.chat_details(chat).1.as_deref() == Some("Where the fleet talks")
        })
        .await;
    let (title, _, _) = app.tg.chat_details(chat);
    assert_eq!(title.as_deref(), Some("Fleet ops (Matrix)"));
    let titles: Vec<Value> = app
        .tg
        .requests("setChatTitle")
        .iter()
        .map(|r| r["title"].clone())
        .collect();
    assert_eq!(
        titles,
        vec![json!("Fleet ops (Matrix)")],
        "no echo of the bridge's own rename"
    );

    // A new room avatar becomes the group's photo.
    let photo = payload(9_000, 3);
    let mxc = app.ezra.upload(photo.clone(), "image/png", "avatar.png").await;
    app.ezra
        .set_state(&app.room, "m.room.avatar", json!({"url": mxc}))
        .await;
    app.tg
        .wait_until("the group photo on Telegram", Duration::from_secs(30), |tg| {
            tg.chat_details(chat).2.as_deref() == Some(photo.as_slice())
        })
        .await;
}

/// Without power in the room the bot cannot set the name or kick: a title change is told in a
/// notice, and a removed member's puppet leaves by itself with the reason.
async fn without_power_a_title_change_is_told_and_a_removed_puppet_leaves_with_the_reason() {
    let app = in_process::spawn().await;
    let rook = app.tg.add_user(5501, "Rook", None, None);
    let vega = app.tg.add_user(5502, "Vega", None, None);
    let puppet = app.puppet(5501);
    app.tg
        .inject_service(app.chat, &vega, json!({"new_chat_title": "Ops, renamed"}));
    let notices = app.wait_from(&app.bot, 1).await;
    assert_eq!(
        body(&notices[0]),
        "Vega changed the group's name to “Ops, renamed” on Telegram."
    );
    assert_eq!(notices[0]["content"]["msgtype"], "m.notice");
    assert_eq!(state(&app, "m.room.name").await.unwrap()["name"], "test room");

    app.tg
        .inject_service(app.chat, &rook, json!({"new_chat_members": [rook.to_json()]}));
    wait_membership(&app, &puppet, "join").await;
    app.tg
        .inject_service(app.chat, &vega, json!({"left_chat_member": rook.to_json()}));
    wait_membership(&app, &puppet, "leave").await;
    let left = last_member_event(&app, &puppet).await;
    assert_eq!(left["sender"], puppet.as_str(), "{left}");
    assert_eq!(
        left["content"]["reason"], "removed from the Telegram group by Vega",
        "{left}"
    );
}

async fn a_pin_becomes_a_notice_naming_the_pinned_message() {
    let app = in_process::spawn().await;
    let rook = app.tg.add_user(5301, "Rook", None, None);
    let vega = app.tg.add_user(5302, "Vega", None, None);
    let msg = app.tg.inject_text(app.chat, &rook, "deploy at 14:00");
    let original = app.wait_from(&app.puppet(5301), 1).await[0]["event_id"].clone();
    let pinned = app.tg.message(app.chat, msg).unwrap();
    app.tg
        .inject_service(app.chat, &vega, json!({"pinned_message": pinned}));
    let notices = app.wait_from(&app.bot, 1).await;
    let notice = &notices[0];
    assert_eq!(notice["content"]["msgtype"], "m.notice", "{notice}");
    assert_eq!(body(notice), "📌 Vega pinned a message: “deploy at 14:00”");
    assert_eq!(
        notice["content"]["m.relates_to"]["m.in_reply_to"]["event_id"], original,
        "{notice}"
    );
}

async fn a_contentless_service_message_posts_nothing() {
    let app = in_process::spawn().await;
    let rook = app.tg.add_user(5401, "Rook", None, None);
    app.tg
        .inject_service(app.chat, &rook, json!({"group_chat_created": true}));
    app.tg.inject_service(
        app.chat,
        &rook,
        json!({"message_auto_delete_timer_changed": {"message_auto_delete_time": 86400}}),
    );
    app.tg
        .inject_service(app.chat, &rook, json!({"video_chat_started": {}}));
    let sentinel = app.sentinel_from_telegram(&rook).await;
    let msgs = app.ezra.messages(&app.room).await;
    assert_eq!(msgs.len(), 1, "only the sentinel: {msgs:?}");
    assert_eq!(msgs[0]["event_id"], sentinel["event_id"]);
    assert!(app.log().contains("service message without content skipped"));
}

/// The real daemon, restarted once: the details are set once per portal, not again after a
/// restart.
async fn a_new_portal_gets_the_chats_title_description_and_photo_once() {
    let mut app = TestApp::prepare().await;
    give_bot_power(&app).await;
    let photo = payload(12_000, 7);
    app.tg
        .set_chat_details(app.chat, Some("Where the fleet is run from"), Some(photo.clone()));
    app.start().await;
    let url = eventually(
        "the room's name, topic and avatar",
        Duration::from_secs(30),
        async || {
            let (name, topic, avatar) = (
                state(&app, "m.room.name").await,
                state(&app, "m.room.topic").await,
                state(&app, "m.room.avatar").await,
            );
            match (&name, &topic, &avatar) {
                (Some(n), Some(t), Some(a))
                    if n["name"] == "fleet-ops"
                        && t["topic"] == "Where the fleet is run from"
                        && a["url"].is_string() =>
                {
                    Ok(a["url"].as_str().unwrap().to_owned())
                }
                _ => Err(format!("{name:?} {topic:?} {avatar:?}\n{}", app.log())),
            }
        },
    )
    .await;
    assert_eq!(app.ezra.download(&url).await, photo);

    app.stop();
    app.start().await;
    app.wait_log("room details from telegram set already").await;
    let by_bot: Vec<String> = app
        .ezra
        .events(&app.room)
        .await
        .into_iter()
        .filter(|e| e["sender"] == app.bot.as_str())
        .filter_map(|e| e["type"].as_str().map(str::to_owned))
        .filter(|t| ["m.room.name", "m.room.topic", "m.room.avatar"].contains(&t.as_str()))
        .collect();
    assert_eq!(by_bot, ["m.room.name", "m.room.topic", "m.room.avatar"], "once each");
    app.stop();
}

async fn status_lists_the_members_on_both_sides() {
    let app = in_process::spawn().await;
    let rook = app.tg.add_user(5601, "Rook", None, None);
    app.tg.inject_text(app.chat, &rook, "present");
    app.wait_from(&app.puppet(5601), 1).await;
    let (_, status) = app.cli(&["status"]).await;
    assert!(status.contains("members (Telegram lists only"), "{status}");
    assert!(status.contains(&app.ezra.user_id), "Matrix members: {status}");
    assert!(status.contains("the bridge bot"), "{status}");
    assert!(
        status.contains("Rook") && status.contains("(5601)"),
        "puppets seen: {status}"
    );
    let bot = app.tg.bot_user();
    assert!(
        status.contains("member(s); administrators: ") && status.contains(&format!("({})", bot.id)),
        "Telegram side: {status}"
    );
}

both!(
    telegram_join_and_leave_become_puppet_membership_and_a_kick_shows_as_a_kick,
    telegram_title_becomes_the_room_name_and_matrix_details_reach_telegram_only_when_switched_on,
    without_power_a_title_change_is_told_and_a_removed_puppet_leaves_with_the_reason,
    a_pin_becomes_a_notice_naming_the_pinned_message,
    a_contentless_service_message_posts_nothing,
    a_new_portal_gets_the_chats_title_description_and_photo_once,
    status_lists_the_members_on_both_sides,
);
