//! Self-test of the fake Bot API: drives it with a real teloxide `Bot`, so the
//! JSON it produces is checked against teloxide 0.17's types.

use std::time::{Duration, Instant};

use reqwest::Url;
use serde_json::{Value, json};
use teloxide::prelude::*;
use teloxide::types::{
    AllowedUpdate, BotCommand, MessageEntityKind, MessageId, ParseMode, ReactionType,
    ReplyParameters, Update, UpdateKind, UserId,
};
use teloxide::{ApiError, RequestError};

use crate::fake_telegram::FakeTelegram;

const TOKEN: &str = "123456:TEST-token";
const CHAT: i64 = -1001234567890;

async fn setup() -> (FakeTelegram, Bot) {
    let fake = FakeTelegram::start(TOKEN).await;
    fake.add_chat(CHAT, "Ops room");
    let bot = Bot::new(TOKEN).set_api_url(Url::parse(&fake.api_url()).unwrap());
    (fake, bot)
}

/// Polls without waiting and returns the updates.
async fn poll(bot: &Bot, offset: i32) -> Vec<Update> {
    bot.get_updates()
        .offset(offset)
        .timeout(0)
        .await
        .expect("getUpdates")
}

fn message(update: &Update) -> &Message {
    match &update.kind {
        UpdateKind::Message(m) => m,
        other => panic!("expected a message update, got {other:?}"),
    }
}

#[tokio::test]
async fn fake_telegram_get_me_parses() {
    let (fake, bot) = setup().await;
    let me = bot.get_me().await.expect("getMe");
    assert!(me.user.is_bot);
    assert_eq!(me.user.id, UserId(123456));
    assert_eq!(me.username(), "tgmx_test_bot");
    assert!(me.can_read_all_group_messages);
    assert_eq!(fake.bot_user().id, 123456);
    assert_eq!(fake.calls("getMe"), 1);
}

#[tokio::test]
async fn fake_telegram_injected_text_arrives_as_message() {
    let (fake, bot) = setup().await;
    let alice = fake.add_user(42, "Alice", Some("Liddell"), Some("alice"));
    let id = fake.inject_text(CHAT, &alice, "hello bridge");

    let updates = bot
        .get_updates()
        .offset(0)
        .timeout(1)
        .await
        .expect("getUpdates");
    assert_eq!(updates.len(), 1);
    let m = message(&updates[0]);
    assert_eq!(m.id, MessageId(id));
    assert_eq!(m.text(), Some("hello bridge"));
    let from = m.from.as_ref().expect("from");
    assert_eq!(from.id, UserId(42));
    assert_eq!(from.first_name, "Alice");
    assert_eq!(from.last_name.as_deref(), Some("Liddell"));
    assert_eq!(from.username.as_deref(), Some("alice"));
    assert!(!from.is_bot);
    assert_eq!(m.chat.id, ChatId(CHAT));
    assert!(m.chat.is_supergroup());
    assert_eq!(m.chat.title(), Some("Ops room"));
}

#[tokio::test]
async fn fake_telegram_injected_reply_and_entities_parse() {
    let (fake, bot) = setup().await;
    let alice = fake.add_user(42, "Alice", None, None);
    let first = fake.inject_text(CHAT, &alice, "original");
    let reply = fake.inject_message(
        CHAT,
        &alice,
        "bold reply",
        json!([{ "type": "bold", "offset": 0, "length": 4 }]),
        Some(first),
    );
    assert_eq!(reply, first + 1, "message ids increase per chat");

    let updates = poll(&bot, 0).await;
    assert_eq!(updates.len(), 2);
    assert!(updates[0].id < updates[1].id);
    let m = message(&updates[1]);
    let target = m.reply_to_message().expect("reply_to_message");
    assert_eq!(target.id, MessageId(first));
    assert_eq!(target.text(), Some("original"));
    let entities = m.entities().expect("entities");
    assert_eq!(entities.len(), 1);
    assert_eq!(entities[0].kind, MessageEntityKind::Bold);
    assert_eq!((entities[0].offset, entities[0].length), (0, 4));
}

#[tokio::test]
async fn fake_telegram_edit_arrives_as_edited_message() {
    let (fake, bot) = setup().await;
    let alice = fake.add_user(42, "Alice", None, None);
    let id = fake.inject_text(CHAT, &alice, "typo");
    fake.inject_edit(CHAT, id, "fixed");

    let updates = poll(&bot, 0).await;
    assert_eq!(updates.len(), 2);
    match &updates[1].kind {
        UpdateKind::EditedMessage(m) => {
            assert_eq!(m.id, MessageId(id));
            assert_eq!(m.text(), Some("fixed"));
            assert!(m.edit_date().is_some());
        }
        other => panic!("expected edited_message, got {other:?}"),
    }
}

#[tokio::test]
async fn fake_telegram_long_poll_waits_and_wakes_on_injection() {
    let (fake, bot) = setup().await;
    let alice = fake.add_user(42, "Alice", None, None);

    // Nothing to deliver: the poll lasts its whole timeout.
    let started = Instant::now();
    let updates = bot.get_updates().timeout(1).await.expect("getUpdates");
    assert!(updates.is_empty());
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "returned after {:?}",
        started.elapsed()
    );

    let injector = fake.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        injector.inject_text(CHAT, &alice, "wake up");
    });
    let started = Instant::now();
    let updates = bot.get_updates().timeout(10).await.expect("getUpdates");
    let elapsed = started.elapsed();
    assert_eq!(updates.len(), 1);
    assert_eq!(message(&updates[0]).text(), Some("wake up"));
    assert!(
        elapsed >= Duration::from_millis(250),
        "returned before the injection: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(2),
        "did not wake promptly: {elapsed:?}"
    );
}

#[tokio::test]
async fn fake_telegram_offset_confirms_updates() {
    let (fake, bot) = setup().await;
    let alice = fake.add_user(42, "Alice", None, None);
    for text in ["one", "two", "three"] {
        fake.inject_text(CHAT, &alice, text);
    }
    let updates = poll(&bot, 0).await;
    assert_eq!(updates.len(), 3);
    assert_eq!(fake.pending_updates(), 3, "delivery alone does not confirm");

    // Confirm the first one only.
    let second = updates[1].id.0 as i32;
    let rest = poll(&bot, second).await;
    assert_eq!(rest.len(), 2);
    assert_eq!(message(&rest[0]).text(), Some("two"));
    assert_eq!(fake.pending_updates(), 2);

    // `limit` caps the batch.
    let limited = bot
        .get_updates()
        .offset(second)
        .limit(1)
        .timeout(0)
        .await
        .expect("getUpdates");
    assert_eq!(limited.len(), 1);

    let last = updates[2].id.0 as i32;
    assert!(poll(&bot, last + 1).await.is_empty());
    assert_eq!(fake.pending_updates(), 0);
    assert_eq!(fake.calls("getUpdates"), 4);
}

#[tokio::test]
async fn fake_telegram_allowed_updates_filters_new_updates() {
    let (fake, bot) = setup().await;
    let alice = fake.add_user(42, "Alice", None, None);
    bot.get_updates()
        .allowed_updates([AllowedUpdate::EditedMessage])
        .timeout(0)
        .await
        .expect("getUpdates");
    let id = fake.inject_text(CHAT, &alice, "filtered out");
    assert_eq!(fake.pending_updates(), 0);
    fake.inject_edit(CHAT, id, "edited");
    assert_eq!(
        fake.pending_updates(),
        1,
        "the setting persists across calls"
    );
    let requests = fake.requests("getUpdates");
    assert_eq!(requests[0]["allowed_updates"], json!(["edited_message"]));
}

#[tokio::test]
async fn fake_telegram_concurrent_get_updates_conflict() {
    let (fake, bot) = setup().await;
    let alice = fake.add_user(42, "Alice", None, None);
    let long_poll = tokio::spawn({
        let bot = bot.clone();
        async move { bot.get_updates().timeout(10).await }
    });
    fake.wait_calls("getUpdates", 1, Duration::from_secs(5))
        .await;
    let err = bot
        .get_updates()
        .timeout(0)
        .await
        .expect_err("second poll must conflict");
    assert!(
        matches!(
            err,
            RequestError::Api(ApiError::TerminatedByOtherGetUpdates)
        ),
        "{err:?}"
    );

    fake.inject_text(CHAT, &alice, "release");
    let updates = long_poll.await.unwrap().expect("first poll");
    assert_eq!(updates.len(), 1);
    // Once it ended, polling works again.
    assert_eq!(poll(&bot, 0).await.len(), 1);
}

#[tokio::test]
async fn fake_telegram_send_message_html_is_recorded_raw() {
    let (fake, bot) = setup().await;
    let alice = fake.add_user(42, "Alice", None, None);
    let target = fake.inject_text(CHAT, &alice, "question");

    let html = "<b>Alice</b>: 1 &lt; 2 &amp; <a href=\"https://example.org/\">link</a> <i>ok</i>";
    let sent = bot
        .send_message(ChatId(CHAT), html)
        .parse_mode(ParseMode::Html)
        .reply_parameters(ReplyParameters::new(MessageId(target)))
        .await
        .expect("sendMessage");
    assert_eq!(
        sent.id,
        MessageId(target + 1),
        "ids are shared with user messages"
    );
    assert_eq!(sent.text(), Some("Alice: 1 < 2 & link ok"));
    assert_eq!(sent.from.as_ref().unwrap().id, UserId(123456));
    assert_eq!(sent.reply_to_message().unwrap().id, MessageId(target));
    let kinds: Vec<_> = sent
        .entities()
        .unwrap()
        .iter()
        .map(|e| (e.kind.clone(), e.offset, e.length))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (MessageEntityKind::Bold, 0, 5),
            (
                MessageEntityKind::TextLink {
                    url: Url::parse("https://example.org/").unwrap()
                },
                15,
                4
            ),
            (MessageEntityKind::Italic, 20, 2),
        ]
    );

    let record = fake.wait_sent(CHAT, 1, Duration::from_secs(1)).await;
    assert_eq!(record.len(), 1);
    assert_eq!(record[0].text, html);
    assert_eq!(record[0].rendered_text, "Alice: 1 < 2 & link ok");
    assert_eq!(record[0].parse_mode.as_deref(), Some("HTML"));
    assert_eq!(record[0].reply_to, Some(target));
    assert_eq!(record[0].message_id, target + 1);
    assert_eq!(record[0].method, "sendMessage");
    assert!(!record[0].deleted);
    // Bots do not receive their own messages.
    assert_eq!(fake.pending_updates(), 1);
}

#[tokio::test]
async fn fake_telegram_send_message_errors_match_telegram() {
    let (fake, bot) = setup().await;
    let err = bot
        .send_message(ChatId(CHAT), "a<br>b")
        .parse_mode(ParseMode::Html)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RequestError::Api(ApiError::CantParseEntities(d)) if d.contains("\"br\"")),
        "{err:?}"
    );
    let err = bot
        .send_message(ChatId(CHAT), "<b>open")
        .parse_mode(ParseMode::Html)
        .await
        .unwrap_err();
    assert!(
        matches!(err, RequestError::Api(ApiError::CantParseEntities(_))),
        "{err:?}"
    );
    let err = bot.send_message(ChatId(CHAT), "  \n ").await.unwrap_err();
    assert!(
        matches!(err, RequestError::Api(ApiError::MessageTextIsEmpty)),
        "{err:?}"
    );
    let err = bot.send_message(ChatId(-1), "hi").await.unwrap_err();
    assert!(
        matches!(err, RequestError::Api(ApiError::ChatNotFound)),
        "{err:?}"
    );
    let err = bot
        .send_message(ChatId(CHAT), "x".repeat(4097))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RequestError::Api(ApiError::MessageIsTooLong)),
        "{err:?}"
    );
    let err = bot
        .send_message(ChatId(CHAT), "hi")
        .reply_parameters(ReplyParameters::new(MessageId(999)))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RequestError::Api(ApiError::MessageToReplyNotFound)),
        "{err:?}"
    );
    assert!(fake.sent(CHAT).is_empty(), "failed sends are not recorded");
    assert_eq!(fake.calls("sendMessage"), 6);
}

#[tokio::test]
async fn fake_telegram_edit_and_delete_are_recorded() {
    let (fake, bot) = setup().await;
    let alice = fake.add_user(42, "Alice", None, None);
    let theirs = fake.inject_text(CHAT, &alice, "user message");
    let sent = bot.send_message(ChatId(CHAT), "draft").await.unwrap();

    let edited = bot
        .edit_message_text(ChatId(CHAT), sent.id, "<i>final</i>")
        .parse_mode(ParseMode::Html)
        .await
        .expect("editMessageText");
    assert_eq!(edited.text(), Some("final"));
    assert!(edited.edit_date().is_some());
    assert_eq!(
        fake.edits(CHAT),
        vec![(sent.id.0, "<i>final</i>".to_owned())]
    );

    let err = bot
        .edit_message_text(ChatId(CHAT), sent.id, "<i>final</i>")
        .parse_mode(ParseMode::Html)
        .await
        .unwrap_err();
    assert!(
        matches!(err, RequestError::Api(ApiError::MessageNotModified)),
        "{err:?}"
    );
    let err = bot
        .edit_message_text(ChatId(CHAT), MessageId(theirs), "hijack")
        .await
        .unwrap_err();
    assert!(
        matches!(err, RequestError::Api(ApiError::MessageCantBeEdited)),
        "{err:?}"
    );

    bot.delete_message(ChatId(CHAT), sent.id)
        .await
        .expect("deleteMessage");
    bot.delete_message(ChatId(CHAT), MessageId(theirs))
        .await
        .expect("delete a user's message");
    assert_eq!(fake.deleted(CHAT), vec![sent.id.0, theirs]);
    let record = fake.sent(CHAT);
    assert_eq!(record.len(), 1);
    assert!(record[0].deleted);
    assert_eq!(
        record[0].text, "draft",
        "the record keeps the text as first sent"
    );
    assert!(fake.message(CHAT, sent.id.0).is_none());

    let err = bot.delete_message(ChatId(CHAT), sent.id).await.unwrap_err();
    assert!(
        matches!(err, RequestError::Api(ApiError::MessageToDeleteNotFound)),
        "{err:?}"
    );
    let err = bot
        .edit_message_text(ChatId(CHAT), sent.id, "gone")
        .await
        .unwrap_err();
    assert!(
        matches!(err, RequestError::Api(ApiError::MessageToEditNotFound)),
        "{err:?}"
    );
}

#[tokio::test]
async fn fake_telegram_fail_next_retry_after() {
    let (fake, bot) = setup().await;
    fake.fail_next("sendMessage", 429, Some(2), 1);
    let err = bot.send_message(ChatId(CHAT), "hi").await.unwrap_err();
    match err {
        RequestError::RetryAfter(secs) => assert_eq!(secs.seconds(), 2),
        other => panic!("expected RetryAfter, got {other:?}"),
    }
    assert!(
        fake.sent(CHAT).is_empty(),
        "a rate-limited call has no effect"
    );
    bot.send_message(ChatId(CHAT), "hi")
        .await
        .expect("second attempt succeeds");
    assert_eq!(fake.calls("sendmessage"), 2);
    assert_eq!(fake.sent(CHAT).len(), 1);

    fake.fail_next("getMe", 403, None, 2);
    for _ in 0..2 {
        let err = bot.get_me().await.unwrap_err();
        assert!(
            matches!(err, RequestError::Api(ApiError::BotKickedFromSupergroup)),
            "{err:?}"
        );
    }
    bot.get_me().await.expect("faults are used up");
}

#[tokio::test]
async fn fake_telegram_wrong_token_and_unknown_method() {
    let (fake, _bot) = setup().await;
    let wrong = Bot::new("123456:WRONG").set_api_url(Url::parse(&fake.api_url()).unwrap());
    let err = wrong.get_me().await.unwrap_err();
    assert!(
        matches!(err, RequestError::Api(ApiError::InvalidToken)),
        "{err:?}"
    );
    assert_eq!(fake.calls("getMe"), 0, "unauthorized calls are not counted");

    let http = reqwest::Client::new();
    let response = http
        .post(format!("{}/bot{TOKEN}/noSuchMethod", fake.api_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({ "ok": false, "error_code": 404, "description": "Not Found" })
    );

    let response = http
        .get(format!("{}/bot123456:WRONG/getMe", fake.api_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({ "ok": false, "error_code": 401, "description": "Unauthorized" })
    );
}

#[tokio::test]
async fn fake_telegram_accepts_query_and_form_encodings() {
    let (fake, _bot) = setup().await;
    let http = reqwest::Client::new();
    let base = format!("{}/bot{TOKEN}", fake.api_url());

    let body: Value = http
        .get(format!("{base}/GETME"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["ok"], json!(true));
    assert_eq!(body["result"]["username"], json!("tgmx_test_bot"));

    let response = http
        .post(format!("{base}/sendMessage?chat_id={CHAT}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("text=%3Cb%3Ehi%3C%2Fb%3E&parse_mode=HTML&reply_parameters=%7B%22message_id%22%3A7%2C%22allow_sending_without_reply%22%3Atrue%7D")
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["ok"], json!(true), "{body}");
    assert_eq!(body["result"]["text"], json!("hi"));
    assert_eq!(
        body["result"]["entities"],
        json!([{ "type": "bold", "offset": 0, "length": 2 }])
    );
    assert!(body["result"].get("reply_to_message").is_none());
    assert_eq!(fake.sent(CHAT)[0].text, "<b>hi</b>");

    let response = http
        .post(format!("{base}/sendMessage"))
        .header("content-type", "multipart/form-data; boundary=x")
        .body("--x--")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn fake_telegram_chat_and_bookkeeping_methods_parse() {
    let (fake, bot) = setup().await;
    let alice = fake.add_user(42, "Alice", None, Some("alice"));
    let id = fake.inject_text(CHAT, &alice, "pin me");

    let chat = bot.get_chat(ChatId(CHAT)).await.expect("getChat");
    assert!(chat.is_supergroup());
    assert_eq!(chat.title(), Some("Ops room"));
    let private = bot.get_chat(ChatId(42)).await.expect("getChat private");
    assert!(private.is_private());
    assert_eq!(private.username(), Some("alice"));
    let err = bot.get_chat(ChatId(-5)).await.unwrap_err();
    assert!(
        matches!(err, RequestError::Api(ApiError::ChatNotFound)),
        "{err:?}"
    );

    bot.set_my_commands([BotCommand::new("status", "Show bridge status")])
        .await
        .expect("setMyCommands");
    assert_eq!(fake.commands()[0]["command"], json!("status"));
    assert_eq!(bot.get_my_commands().await.unwrap().len(), 1);
    bot.delete_webhook().await.expect("deleteWebhook");
    let info = bot.get_webhook_info().await.expect("getWebhookInfo");
    assert!(info.url.is_none());
    assert_eq!(info.pending_update_count, 1);

    bot.pin_chat_message(ChatId(CHAT), MessageId(id))
        .await
        .expect("pinChatMessage");
    assert_eq!(fake.pinned(CHAT), vec![id]);
    bot.unpin_chat_message(ChatId(CHAT))
        .await
        .expect("unpinChatMessage");
    assert!(fake.pinned(CHAT).is_empty());
    bot.set_message_reaction(ChatId(CHAT), MessageId(id))
        .reaction([ReactionType::Emoji {
            emoji: "👍".to_owned(),
        }])
        .await
        .expect("setMessageReaction");
    assert_eq!(
        fake.reactions(CHAT),
        vec![(id, json!([{ "type": "emoji", "emoji": "👍" }]))]
    );

    let me = bot
        .get_chat_member(ChatId(CHAT), UserId(123456))
        .await
        .expect("getChatMember bot");
    assert!(me.kind.is_administrator());
    let member = bot
        .get_chat_member(ChatId(CHAT), UserId(42))
        .await
        .expect("getChatMember user");
    assert!(member.kind.is_member());
    assert_eq!(member.user.username.as_deref(), Some("alice"));
    let admins = bot
        .get_chat_administrators(ChatId(CHAT))
        .await
        .expect("getChatAdministrators");
    assert_eq!(admins.len(), 1);
    let photos = bot
        .get_user_profile_photos(UserId(42))
        .await
        .expect("getUserProfilePhotos");
    assert_eq!(photos.total_count, 0);
}

#[tokio::test]
#[should_panic(expected = "waiting for 1 message(s) sent to chat")]
async fn fake_telegram_wait_sent_times_out_clearly() {
    let (fake, _bot) = setup().await;
    fake.wait_sent(CHAT, 1, Duration::from_millis(100)).await;
}

#[tokio::test]
async fn fake_telegram_abandoned_long_poll_frees_the_slot() {
    let (fake, bot) = setup().await;
    // A client that gives up on its long poll (daemon stopped, timeout) must
    // not leave the fake answering 409 to the next poller.
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let url = format!("{}/bot{TOKEN}/getUpdates?timeout=30", fake.api_url());
    assert!(impatient.get(url).send().await.is_err());
    // The server notices the disconnect asynchronously: allow a short grace period.
    let started = Instant::now();
    loop {
        match bot.get_updates().timeout(0).await {
            Ok(updates) => break assert!(updates.is_empty()),
            Err(RequestError::Api(ApiError::TerminatedByOtherGetUpdates))
                if started.elapsed() < Duration::from_secs(2) =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(err) => panic!("poll slot not freed: {err:?}"),
        }
    }
}
