//! Bot agents on Telegram (issue 17): other bots' messages are bridged as bot-marked puppets when
//! Telegram shows them to the bridge bot (Bot-to-Bot Communication Mode), a Matrix reply to one
//! is a Telegram reply to it, two bridges on one group do not relay each other's posts back and
//! forth, and `tgmx check` says per chat whether the bot sees bot agents.

use std::time::Duration;

use serde_json::json;

use crate::harness::{TestApp, body, slot_config};
use crate::in_process;

/// A second bridge's bot token (its id, 654321, is the token's prefix).
const TOKEN_B: &str = "654321:TEST-token-bridgeB_0123456789";

async fn bot_agent_message_is_bridged_as_a_bot_marked_puppet() {
    let app = in_process::spawn().await;
    app.tg.set_bot_to_bot(app.tg.bot_user().id, true);
    let agent = app.tg.add_agent_bot(7001, "Scout", "scout_agent_bot");
    let person = app.tg.add_user(7101, "Wren", None, None);
    app.tg.inject_text(app.chat, &agent, "perimeter clear");
    app.tg.inject_text(app.chat, &person, "thanks");

    let from_agent = app.wait_from(&app.puppet(7001), 1).await;
    assert_eq!(body(&from_agent[0]), "perimeter clear");
    app.wait_from(&app.puppet(7101), 1).await;
    assert_eq!(
        app.ezra.member_name(&app.room, &app.puppet(7001)).await.as_deref(),
        Some("Scout (bot)")
    );
    assert_eq!(
        app.ezra.member_name(&app.room, &app.puppet(7101)).await.as_deref(),
        Some("Wren")
    );
}

async fn bot_agent_messages_the_bridge_bot_cannot_see_are_not_bridged() {
    let app = in_process::spawn().await;
    let ours = app.tg.bot_user().id;
    let agent = app.tg.add_agent_bot(7002, "Relay", "relay_agent_bot");
    let person = app.tg.add_user(7102, "Moss", None, None);
    // Neither bot has the mode: Telegram shows the bridge bot nothing of the agent's.
    app.tg.inject_text(app.chat, &agent, "unseen: no mode anywhere");
    // The agent has it: a command addressed to the bridge bot reaches it, chatter does not.
    app.tg.set_bot_to_bot(agent.id, true);
    app.tg.inject_text(app.chat, &agent, "unseen: not addressed");
    app.tg.inject_text(app.chat, &agent, "/status@tgmx_test_bot");
    // The bridge bot has the mode but is no admin: still only what is addressed to it.
    app.tg.set_bot_to_bot(ours, true);
    app.tg.set_admin(ours, app.chat, false);
    app.tg.inject_text(app.chat, &agent, "unseen: bridge bot not admin");
    app.sentinel_from_telegram(&person).await;

    let bodies: Vec<String> = app
        .ezra
        .messages(&app.room)
        .await
        .iter()
        .map(|e| body(e).to_owned())
        .collect();
    assert!(bodies.iter().all(|b| !b.starts_with("unseen")), "{bodies:?}");
    assert_eq!(
        bodies.iter().filter(|b| *b == "/status@tgmx_test_bot").count(),
        1,
        "{bodies:?}"
    );
    // And `tgmx check` says why, and what to change.
    let (ok, out) = app.cli(&["check"]).await;
    assert!(!ok, "{out}");
    let want = format!(
        "FAIL bot sees bot agents' messages in {} (admin: no, privacy mode: off;",
        app.chat
    );
    assert!(out.contains(&want), "missing {want:?} in:\n{out}");
    assert!(out.contains("make @tgmx_test_bot an admin of the group"), "{out}");
}

async fn matrix_reply_to_a_bot_agent_message_is_a_telegram_reply_the_agent_receives() {
    let app = in_process::spawn().await;
    app.tg.set_bot_to_bot(app.tg.bot_user().id, true);
    // A polling agent without the mode on its side.
    let agent = app.tg.add_bot("7003:agent-token", "Quartermaster", "qm_agent_bot");
    let asked = app.tg.inject_text(app.chat, &agent, "need a decision on fuel");
    let bridged = app.wait_from(&app.puppet(7003), 1).await;
    let event_id = bridged[0]["event_id"].as_str().unwrap();
    app.ezra
        .send(
            &app.room,
            json!({"msgtype": "m.text", "body": "> need a decision on fuel\n\napproved",
                   "m.relates_to": {"m.in_reply_to": {"event_id": event_id}}}),
        )
        .await;

    let chat = app.chat;
    app.tg
        .wait_until("the reply to reach Telegram", Duration::from_secs(30), |tg| {
            tg.sent(chat).iter().any(|s| s.rendered_text.contains("approved"))
        })
        .await;
    let sent = app.tg.sent(chat);
    let reply = sent.iter().find(|s| s.rendered_text.contains("approved")).unwrap();
    assert_eq!(reply.reply_to, Some(asked), "{sent:?}");
    // Telegram hands it to the agent: a reply to its message, and the bridge bot has the mode.
    let to_agent = app.tg.updates_for(agent.id);
    assert!(
        to_agent.iter().any(|u| u["message"]["message_id"] == reply.message_id
            && u["message"]["reply_to_message"]["message_id"] == asked),
        "{to_agent:?}"
    );
}

async fn the_bridge_bots_own_messages_are_never_bridged_back() {
    let app = in_process::spawn().await;
    let person = app.tg.add_user(7105, "Ash", None, None);
    // Telegram does not send a bot its own posts; should it (here: an update made by hand), the
    // bridge must not post its own bot's words into the room as a puppet.
    let own = app.tg.bot_user();
    let from = json!({"id": own.id, "is_bot": true, "first_name": own.first_name, "username": own.username});
    let date = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    app.tg.inject_update(
        "message",
        json!({"message_id": 990, "from": from, "date": date, "text": "own words",
               "chat": {"id": app.chat, "type": "supergroup", "title": "fleet-ops"}}),
    );
    app.sentinel_from_telegram(&person).await;
    let messages = app.ezra.messages(&app.room).await;
    assert!(messages.iter().all(|e| body(e) != "own words"), "{messages:?}");
    assert!(
        !app.ezra.joined_members(&app.room).await.contains(&app.puppet(own.id)),
        "a puppet of the bridge's own bot joined"
    );
}

/// The fake Bot API shows a bot another bot's group messages as
/// <https://core.telegram.org/api/bots/bot-to-bot> says (the bridge tests above rely on it).
#[tokio::test]
async fn fake_telegram_shows_bot_messages_only_as_telegram_does() {
    let tg = crate::fake_telegram::FakeTelegram::start(crate::harness::TG_TOKEN).await;
    let chat = -1_000_000_000_777;
    tg.add_chat(chat, "agents");
    let receiver = tg.add_bot("8001:receiver-token", "Receiver", "receiver_bot");
    let sender = tg.add_agent_bot(8002, "Sender", "sender_bot");
    let person = tg.add_user(8003, "Pat", None, None);
    let seen = |text: &str| tg.updates_for(receiver.id).iter().any(|u| u["message"]["text"] == text);
    // No mode anywhere: nothing, not even a command or a reply addressed to the receiver.
    let asked = tg.inject_text(chat, &person, "people are always seen (privacy off)");
    let own = tg.inject_text(chat, &receiver, "the receiver's own post");
    tg.inject_text(chat, &sender, "plain 1");
    tg.inject_text(chat, &sender, "/ping@receiver_bot 1");
    tg.inject_message(chat, &sender, "reply 1", serde_json::Value::Null, Some(own));
    assert!(seen("people are always seen (privacy off)") && !seen("the receiver's own post"));
    assert!(!seen("plain 1") && !seen("/ping@receiver_bot 1") && !seen("reply 1"));
    // The sender has the mode: what is addressed to the receiver arrives, the rest does not.
    tg.set_bot_to_bot(sender.id, true);
    tg.inject_text(chat, &sender, "plain 2");
    tg.inject_text(chat, &sender, "/ping@receiver_bot 2");
    tg.inject_text(chat, &sender, "/ping@someone_else_bot 2");
    tg.inject_message(chat, &sender, "reply 2", serde_json::Value::Null, Some(own));
    tg.inject_message(
        chat,
        &sender,
        "reply to a person 2",
        serde_json::Value::Null,
        Some(asked),
    );
    assert!(seen("/ping@receiver_bot 2") && seen("reply 2"));
    assert!(!seen("plain 2") && !seen("/ping@someone_else_bot 2") && !seen("reply to a person 2"));
    // The receiver has the mode, is an admin, privacy off: everything.
    tg.set_bot_to_bot(sender.id, false);
    tg.set_bot_to_bot(receiver.id, true);
    tg.inject_text(chat, &sender, "plain 3");
    assert!(seen("plain 3"));
    // ... but not as a plain member, nor with privacy mode on.
    tg.set_admin(receiver.id, chat, false);
    tg.inject_text(chat, &sender, "plain 4");
    tg.set_admin(receiver.id, chat, true);
    tg.set_privacy(receiver.id, true);
    tg.inject_text(chat, &sender, "plain 5");
    tg.inject_text(chat, &sender, "/ping@receiver_bot 5");
    assert!(!seen("plain 4") && !seen("plain 5") && seen("/ping@receiver_bot 5"));
}

/// (sender, body) of every `m.room.message` in the app's room but the bridge bot's notices, sorted.
async fn bodies(app: &TestApp) -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = app
        .ezra
        .messages(&app.room)
        .await
        .iter()
        .filter(|e| e["sender"] != app.bot.as_str())
        .map(|e| (e["sender"].as_str().unwrap_or_default().to_owned(), body(e).to_owned()))
        .collect();
    all.sort();
    all
}

async fn two_bridges_on_one_group_do_not_ping_pong() {
    // Bridge A and bridge B, each with its own bot, room and homeserver slot, on one group.
    let a = TestApp::spawn().await;
    let mut b = TestApp::prepare().await;
    let bot_a = a.tg.bot_user();
    let bot_b = a.tg.add_bot(TOKEN_B, "tgmx bridge B", "tgmx_b_bot");
    a.tg.set_bot_to_bot(bot_a.id, true);
    a.tg.set_bot_to_bot(bot_b.id, true);
    b.tg = a.tg.clone();
    b.chat = a.chat;
    b.env.push(("TGMX_TELEGRAM_TOKEN".into(), TOKEN_B.into()));
    b.write_config("");
    b.start().await;
    let person = a.tg.add_user(7104, "Tansy", None, None);

    a.ezra.send_text(&a.room, "hello from A").await;
    b.ezra.send_text(&b.room, "hello from B").await;
    a.tg.inject_text(a.chat, &person, "hello from Telegram");
    // Each bridge carries the other bridge's post into its room, as a puppet of that bot.
    let (puppet_of_a, puppet_of_b) = (b.puppet(bot_a.id), a.puppet(bot_b.id));
    let wait = |app: &TestApp, sender: String, text: &'static str| {
        let (ezra, room) = (app.ezra.clone(), app.room.clone());
        async move {
            ezra.wait_messages(&room, 1, Duration::from_secs(60), |e| {
                e["sender"] == sender.as_str() && body(e) == text
            })
            .await
        }
    };
    wait(&b, puppet_of_a.clone(), "Ezra: hello from A").await;
    wait(&a, puppet_of_b.clone(), "Ezra: hello from B").await;
    wait(&a, a.puppet(7104), "hello from Telegram").await;
    wait(&b, b.puppet(7104), "hello from Telegram").await;
    assert_eq!(
        b.ezra.member_name(&b.room, &puppet_of_a).await.as_deref(),
        Some("tgmx test bot (bot)")
    );

    // Sentinels both ways through both bridges: each bridge handles a room's events and a
    // chat's updates in order, so once they crossed, any relay of the puppets' posts (and the
    // other bridge's answer to it) would have happened.
    a.ezra.send_text(&a.room, "sentinel A").await;
    b.ezra.send_text(&b.room, "sentinel B").await;
    wait(&b, puppet_of_a.clone(), "Ezra: sentinel A").await;
    wait(&a, puppet_of_b.clone(), "Ezra: sentinel B").await;
    a.tg.inject_text(a.chat, &person, "sentinel Telegram");
    wait(&a, a.puppet(7104), "sentinel Telegram").await;
    wait(&b, b.puppet(7104), "sentinel Telegram").await;

    // On Telegram each bot posted its own room's messages, once each, and nothing else.
    let posts = |bot: i64| -> Vec<String> { a.tg.sent_by(a.chat, bot).into_iter().map(|s| s.text).collect() };
    assert_eq!(
        posts(bot_a.id),
        ["<b>Ezra</b>: hello from A", "<b>Ezra</b>: sentinel A"]
    );
    assert_eq!(
        posts(bot_b.id),
        ["<b>Ezra</b>: hello from B", "<b>Ezra</b>: sentinel B"]
    );
    // In each room every message is there once.
    let expect = |app: &TestApp, other: &str, mine: &str| -> Vec<(String, String)> {
        let ezra = app.ezra.user_id.clone();
        let tansy = app.puppet(7104);
        let mut v: Vec<(String, String)> = [
            (ezra.clone(), format!("hello from {mine}")),
            (ezra, format!("sentinel {mine}")),
            (
                other.to_owned(),
                format!("Ezra: hello from {}", if mine == "A" { "B" } else { "A" }),
            ),
            (
                other.to_owned(),
                format!("Ezra: sentinel {}", if mine == "A" { "B" } else { "A" }),
            ),
            (tansy.clone(), "hello from Telegram".to_owned()),
            (tansy, "sentinel Telegram".to_owned()),
        ]
        .into_iter()
        .collect();
        v.sort();
        v
    };
    assert_eq!(bodies(&a).await, expect(&a, &puppet_of_b, "A"));
    assert_eq!(bodies(&b).await, expect(&b, &puppet_of_a, "B"));
}

async fn check_reports_bot_agent_visibility_per_room() {
    let app = TestApp::prepare().await;
    let ours = app.tg.bot_user().id;
    // A second bridged chat, where the bot is a plain member.
    let other_room = app.ezra.create_room(&[&app.bot]).await;
    let other_chat = app.chat - 77;
    app.tg.add_chat(other_chat, "fleet-logistics");
    app.tg.set_admin(ours, other_chat, false);
    let rooms = [(app.room.clone(), app.chat), (other_room, other_chat)];
    let config = slot_config(app.slot, app.port, &app.hs_url, &app.tg.api_url(), &rooms, "");
    std::fs::write(app.config_path(), config).unwrap();

    let (_, out) = app.cli(&["check"]).await;
    let seen = format!(
        "ok   bot sees bot agents' messages in {} (admin: yes, privacy mode: off; Bot-to-Bot Communication \
         Mode cannot be read through the Bot API: it must be on in @BotFather)",
        app.chat
    );
    assert!(out.contains(&seen), "missing {seen:?} in:\n{out}");
    let unseen = format!("FAIL bot sees bot agents' messages in {other_chat} (admin: no, privacy mode: off;");
    assert!(out.contains(&unseen), "missing {unseen:?} in:\n{out}");
    assert!(out.contains("make @tgmx_test_bot an admin of the group"), "{out}");
    assert!(
        out.contains("Bot Settings, Bot-to-Bot Communication"),
        "no @BotFather step for the mode:\n{out}"
    );

    // Privacy mode on: both chats fail, and the check says how to turn it off.
    app.tg.set_privacy(ours, true);
    let (ok, out) = app.cli(&["check"]).await;
    assert!(!ok, "{out}");
    let line = format!(
        "FAIL bot sees bot agents' messages in {} (admin: yes, privacy mode: on;",
        app.chat
    );
    assert!(out.contains(&line), "missing {line:?} in:\n{out}");
    assert!(
        out.contains("@BotFather, /setprivacy, @tgmx_test_bot, Disable"),
        "{out}"
    );
}

both!(
    bot_agent_message_is_bridged_as_a_bot_marked_puppet,
    bot_agent_messages_the_bridge_bot_cannot_see_are_not_bridged,
    matrix_reply_to_a_bot_agent_message_is_a_telegram_reply_the_agent_receives,
    the_bridge_bots_own_messages_are_never_bridged_back,
    two_bridges_on_one_group_do_not_ping_pong,
    check_reports_bot_agent_visibility_per_room,
);
