//! Self-test of the fake Bot API: drives it with a real teloxide `Bot`, so the
//! JSON it produces is checked against teloxide 0.17's types.

use std::time::{Duration, Instant};

use reqwest::Url;
use serde_json::{Value, json};
use teloxide::prelude::*;
use teloxide::types::{
    AllowedUpdate, BotCommand, FileId, InputFile, MessageEntityKind, MessageId, MessageKind, ParseMode, ReactionType,
    ReplyParameters, Seconds, ThreadId, Update, UpdateKind, UserId,
};
use teloxide::{ApiError, RequestError};

use crate::fake_telegram::FakeTelegram;
use crate::harness::eventually;

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
    bot.get_updates().offset(offset).timeout(0).await.expect("getUpdates")
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

    let updates = bot.get_updates().offset(0).timeout(1).await.expect("getUpdates");
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
        // Not a proof: the injection must come while the poll below waits.
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
    assert!(elapsed < Duration::from_secs(2), "did not wake promptly: {elapsed:?}");
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
    assert_eq!(fake.pending_updates(), 1, "the setting persists across calls");
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
    fake.wait_calls("getUpdates", 1, Duration::from_secs(5)).await;
    let err = bot
        .get_updates()
        .timeout(0)
        .await
        .expect_err("second poll must conflict");
    assert!(
        matches!(err, RequestError::Api(ApiError::TerminatedByOtherGetUpdates)),
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
    assert_eq!(sent.id, MessageId(target + 1), "ids are shared with user messages");
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
    assert!(matches!(err, RequestError::Api(ApiError::ChatNotFound)), "{err:?}");
    let err = bot.send_message(ChatId(CHAT), "x".repeat(4097)).await.unwrap_err();
    assert!(matches!(err, RequestError::Api(ApiError::MessageIsTooLong)), "{err:?}");
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
    assert_eq!(fake.edits(CHAT), vec![(sent.id.0, "<i>final</i>".to_owned())]);

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

    bot.delete_message(ChatId(CHAT), sent.id).await.expect("deleteMessage");
    bot.delete_message(ChatId(CHAT), MessageId(theirs))
        .await
        .expect("delete a user's message");
    assert_eq!(fake.deleted(CHAT), vec![sent.id.0, theirs]);
    let record = fake.sent(CHAT);
    assert_eq!(record.len(), 1);
    assert!(record[0].deleted);
    assert_eq!(record[0].text, "draft", "the record keeps the text as first sent");
    assert!(fake.message(CHAT, sent.id.0).is_none());

    let err = bot.delete_message(ChatId(CHAT), sent.id).await.unwrap_err();
    assert!(
        matches!(err, RequestError::Api(ApiError::MessageToDeleteNotFound)),
        "{err:?}"
    );
    let err = bot.edit_message_text(ChatId(CHAT), sent.id, "gone").await.unwrap_err();
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
    assert!(fake.sent(CHAT).is_empty(), "a rate-limited call has no effect");
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
    assert!(matches!(err, RequestError::Api(ApiError::InvalidToken)), "{err:?}");
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

    // A hand-written multipart body: text fields, a JSON-valued structured field.
    let multipart = format!(
        "--XyZ\r\nContent-Disposition: form-data; name=\"chat_id\"\r\n\r\n{CHAT}\r\n\
         --XyZ\r\nContent-Disposition: form-data; name=\"text\"\r\n\r\nline 1\r\nline 2\r\n\
         --XyZ\r\nContent-Disposition: form-data; name=\"reply_parameters\"\r\n\r\n\
         {{\"message_id\":99,\"allow_sending_without_reply\":true}}\r\n--XyZ--\r\n"
    );
    let body: Value = http
        .post(format!("{base}/sendMessage"))
        .header("content-type", "multipart/form-data; boundary=XyZ")
        .body(multipart)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["ok"], json!(true), "{body}");
    assert_eq!(body["result"]["text"], json!("line 1\r\nline 2"));
    let recorded = &fake.requests("sendMessage")[1];
    assert_eq!(recorded["reply_parameters"]["message_id"], json!(99));
    assert_eq!(recorded["chat_id"], json!(CHAT.to_string()));

    let response = http
        .post(format!("{base}/sendMessage"))
        .header("content-type", "multipart/form-data; boundary=x")
        .body("garbage")
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
    assert!(matches!(err, RequestError::Api(ApiError::ChatNotFound)), "{err:?}");

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
    bot.unpin_chat_message(ChatId(CHAT)).await.expect("unpinChatMessage");
    assert!(fake.pinned(CHAT).is_empty());
    bot.set_message_reaction(ChatId(CHAT), MessageId(id))
        .reaction([ReactionType::Emoji {
            emoji: "👍".to_owned()
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
    let updates = eventually("the poll slot to be freed", Duration::from_secs(2), async || match bot
        .get_updates()
        .timeout(0)
        .await
    {
        Ok(updates) => Ok(updates),
        Err(RequestError::Api(ApiError::TerminatedByOtherGetUpdates)) => {
            Err("terminated by other getUpdates request".to_owned())
        }
        Err(err) => panic!("poll slot not freed: {err:?}"),
    })
    .await;
    assert!(updates.is_empty());
}

/// Bytes that exercise the multipart parser: every byte value, CRLFs and
/// boundary-like `--` runs.
fn tricky_bytes(len: usize) -> Vec<u8> {
    let pattern: Vec<u8> = (0..=255u8).chain(*b"\r\n--\r\n\r\n--boundary\r\n").collect();
    pattern.iter().copied().cycle().take(len).collect()
}

/// The header of a PNG image of `width`x`height` (enough for dimension sniffing).
fn png_header(width: u32, height: u32) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
    png.extend(width.to_be_bytes());
    png.extend(height.to_be_bytes());
    png.extend([8, 6, 0, 0, 0]);
    png
}

/// Downloads `{api_url}/file/bot{token}/{path}` with a plain HTTP client.
async fn download(fake: &FakeTelegram, token: &str, path: &str) -> reqwest::Response {
    reqwest::get(format!("{}/file/bot{token}/{path}", fake.api_url()))
        .await
        .expect("download request")
}

/// `getFile` + download of a file id, as the bridge does it.
async fn fetch(fake: &FakeTelegram, bot: &Bot, file_id: &str) -> Vec<u8> {
    let file = bot.get_file(FileId(file_id.to_owned())).await.expect("getFile");
    let response = download(fake, TOKEN, &file.path).await;
    assert_eq!(response.status(), 200);
    let bytes = response.bytes().await.unwrap().to_vec();
    assert_eq!(file.meta.size as usize, bytes.len());
    bytes
}

#[tokio::test]
async fn fake_telegram_send_voice_uploads_bytes_and_caption() {
    let (fake, bot) = setup().await;
    let alice = fake.add_user(42, "Alice", None, None);
    let target = fake.inject_text(CHAT, &alice, "say it");
    let bytes = tricky_bytes(300_000);

    let sent = bot
        .send_voice(ChatId(CHAT), InputFile::memory(bytes.clone()).file_name("x.ogg"))
        .caption("<b>hear</b> this")
        .parse_mode(ParseMode::Html)
        .duration(7)
        .reply_parameters(ReplyParameters::new(MessageId(target)))
        .await
        .expect("sendVoice");
    let voice = sent.voice().expect("a voice message");
    assert_eq!(voice.duration, Seconds::from_seconds(7));
    assert_eq!(voice.file.size as usize, bytes.len());
    assert_eq!(
        voice.mime_type.as_ref().map(ToString::to_string).as_deref(),
        Some("audio/ogg")
    );
    assert_eq!(sent.caption(), Some("hear this"));
    let entities = sent.caption_entities().expect("caption entities");
    assert_eq!(
        (entities[0].kind.clone(), entities[0].offset, entities[0].length),
        (MessageEntityKind::Bold, 0, 4)
    );
    assert_eq!(sent.reply_to_message().unwrap().id, MessageId(target));

    let record = fake.sent(CHAT);
    assert_eq!(record.len(), 1);
    let record = &record[0];
    assert_eq!(record.method, "sendVoice");
    assert_eq!(record.message_id, sent.id.0);
    assert_eq!(record.caption.as_deref(), Some("<b>hear</b> this"));
    assert_eq!(record.text, "<b>hear</b> this");
    assert_eq!(record.rendered_text, "hear this");
    assert_eq!(record.parse_mode.as_deref(), Some("HTML"));
    assert_eq!(record.reply_to, Some(target));
    let file = record.file.as_ref().expect("file");
    assert_eq!(file.field, "voice");
    assert_eq!(file.file_name.as_deref(), Some("x.ogg"));
    assert_eq!(file.mime_type.as_deref(), Some("audio/ogg"));
    assert_eq!(file.duration, Some(7));
    assert!(file.bytes == bytes, "uploaded bytes differ");
    assert_eq!(file.file_id, voice.file.id.0);

    // The uploaded file can be fetched back byte for byte.
    assert!(fetch(&fake, &bot, &voice.file.id.0).await == bytes);
    assert!(fake.file_bytes(&voice.file.id.0).unwrap() == bytes);
    let recorded = &fake.requests("sendVoice")[0];
    assert_eq!(recorded["duration"], json!("7"));
    assert_eq!(recorded["reply_parameters"]["message_id"], json!(target));
}

#[tokio::test]
async fn fake_telegram_send_document_by_upload_file_id_and_url() {
    let (fake, bot) = setup().await;
    let bytes = tricky_bytes(5000);
    let first = bot
        .send_document(ChatId(CHAT), InputFile::memory(bytes.clone()).file_name("report.pdf"))
        .caption("monthly report")
        .await
        .expect("sendDocument");
    let document = first.document().expect("a document message");
    assert_eq!(document.file_name.as_deref(), Some("report.pdf"));
    assert_eq!(
        document.mime_type.as_ref().map(ToString::to_string).as_deref(),
        Some("application/pdf")
    );
    assert_eq!(first.caption(), Some("monthly report"));
    assert!(first.caption_entities().is_none_or(<[_]>::is_empty));

    // Re-sending by file id keeps the file.
    let again = bot
        .send_document(ChatId(CHAT), InputFile::file_id(document.file.id.clone()))
        .await
        .expect("sendDocument by file_id");
    let resent = again.document().unwrap();
    assert_eq!(resent.file.id, document.file.id);
    assert_eq!(resent.file.unique_id, document.file.unique_id);
    assert!(again.caption().is_none());

    let url = Url::parse("https://example.org/a.zip").unwrap();
    let by_url = bot
        .send_document(ChatId(CHAT), InputFile::url(url))
        .await
        .expect("sendDocument by URL");
    assert!(by_url.document().is_some());

    let err = bot
        .send_document(ChatId(CHAT), InputFile::file_id("nonsense".into()))
        .await
        .unwrap_err();
    assert!(matches!(err, RequestError::Api(ApiError::WrongFileIdOrUrl)), "{err:?}");

    let record = fake.sent(CHAT);
    assert_eq!(record.len(), 3);
    assert!(record.iter().all(|s| s.method == "sendDocument"));
    assert_eq!(record[0].text, "monthly report");
    assert!(record[1].file.as_ref().unwrap().bytes == bytes);
    assert_eq!(record[1].caption, None);
    assert_eq!(record[1].text, "");
    let url_file = record[2].file.as_ref().unwrap();
    assert_eq!(url_file.url.as_deref(), Some("https://example.org/a.zip"));
    assert!(url_file.bytes.is_empty());
}

#[tokio::test]
async fn fake_telegram_send_photo_sizes_and_limits() {
    let (fake, bot) = setup().await;
    let sent = bot
        .send_photo(
            ChatId(CHAT),
            InputFile::memory(png_header(640, 480)).file_name("cat.png"),
        )
        .caption("a cat")
        .await
        .expect("sendPhoto");
    let sizes = sent.photo().expect("a photo message");
    assert_eq!(sizes.len(), 2);
    assert_eq!((sizes[1].width, sizes[1].height), (640, 480));
    assert_eq!((sizes[0].width, sizes[0].height), (90, 67));
    assert_eq!(sent.caption(), Some("a cat"));
    assert!(fetch(&fake, &bot, &sizes[1].file.id.0).await == png_header(640, 480));

    // Bytes that are not a recognizable image are accepted with a nominal size.
    let blob = bot
        .send_photo(ChatId(CHAT), InputFile::memory(vec![1, 2, 3]).file_name("x.jpg"))
        .await
        .expect("sendPhoto");
    let blob_sizes = blob.photo().unwrap();
    assert_eq!((blob_sizes[1].width, blob_sizes[1].height), (800, 600));

    let err = bot
        .send_photo(
            ChatId(CHAT),
            InputFile::memory(png_header(20_000, 100)).file_name("wide.png"),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RequestError::Api(ApiError::Unknown(d)) if d == "Bad Request: PHOTO_INVALID_DIMENSIONS"),
        "{err:?}"
    );
    let mut big = png_header(1000, 1000);
    big.resize(11 * 1024 * 1024, 0);
    let err = bot
        .send_photo(ChatId(CHAT), InputFile::memory(big).file_name("big.png"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RequestError::Api(ApiError::Unknown(d)) if d == "Bad Request: PHOTO_SAVE_FILE_INVALID"),
        "{err:?}"
    );
    let sent_record = fake.sent(CHAT);
    assert_eq!(sent_record.len(), 2, "failed sends are not recorded");
    assert_eq!(sent_record[0].method, "sendPhoto");
    assert_eq!(sent_record[0].file.as_ref().unwrap().field, "photo");
    assert_eq!(sent_record[0].caption.as_deref(), Some("a cat"));
}

#[tokio::test]
async fn fake_telegram_upload_over_50_mib_is_too_large() {
    let (fake, bot) = setup().await;
    let err = bot
        .send_document(
            ChatId(CHAT),
            InputFile::memory(vec![7u8; 51 * 1024 * 1024]).file_name("huge.bin"),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, RequestError::Api(ApiError::RequestEntityTooLarge)),
        "{err:?}"
    );
    assert!(fake.sent(CHAT).is_empty());
    assert_eq!(fake.calls("sendDocument"), 1);
}

#[tokio::test]
async fn fake_telegram_injected_media_parse_and_download() {
    let (fake, bot) = setup().await;
    let alice = fake.add_user(42, "Alice", None, None);
    let photo_bytes = tricky_bytes(2048);
    let doc_bytes = b"%PDF-1.7 fake".to_vec();
    let voice_bytes = b"OggS fake opus".to_vec();
    let photo = fake.inject_photo(CHAT, &alice, photo_bytes.clone(), 1280, 960, Some("look"));
    let document = fake.inject_document(CHAT, &alice, doc_bytes.clone(), "spec.pdf", "application/pdf", None);
    let voice = fake.inject_voice(CHAT, &alice, voice_bytes.clone(), 3);
    let sticker_file = fake.add_file(b"RIFF....WEBP".to_vec());
    let mut sticker = fake.file_meta(&sticker_file).expect("file meta");
    for (key, value) in [
        ("width", json!(512)),
        ("height", json!(512)),
        ("type", json!("regular")),
        ("is_animated", json!(false)),
        ("is_video", json!(false)),
        ("emoji", json!("🙂")),
    ] {
        sticker[key] = value;
    }
    let sticker_id = fake.inject_media(CHAT, &alice, json!({ "sticker": sticker }));
    let location = fake.inject_media(
        CHAT,
        &alice,
        json!({ "location": { "latitude": 52.5, "longitude": 13.4 } }),
    );

    let updates = poll(&bot, 0).await;
    assert_eq!(updates.len(), 5);

    let m = message(&updates[0]);
    assert_eq!(m.id, MessageId(photo));
    assert_eq!(m.caption(), Some("look"));
    assert!(m.text().is_none());
    let sizes = m.photo().expect("photo");
    assert_eq!(sizes.len(), 2);
    assert_eq!((sizes[1].width, sizes[1].height), (1280, 960));
    assert!(sizes[0].width <= 90 && sizes[0].height <= 90);
    assert!(fetch(&fake, &bot, &sizes[1].file.id.0).await == photo_bytes);

    let m = message(&updates[1]);
    assert_eq!(m.id, MessageId(document));
    let d = m.document().expect("document");
    assert_eq!(d.file_name.as_deref(), Some("spec.pdf"));
    assert_eq!(
        d.mime_type.as_ref().map(ToString::to_string).as_deref(),
        Some("application/pdf")
    );
    assert!(m.caption().is_none());
    assert_eq!(fetch(&fake, &bot, &d.file.id.0).await, doc_bytes);

    let m = message(&updates[2]);
    assert_eq!(m.id, MessageId(voice));
    let v = m.voice().expect("voice");
    assert_eq!(v.duration, Seconds::from_seconds(3));
    assert_eq!(
        v.mime_type.as_ref().map(ToString::to_string).as_deref(),
        Some("audio/ogg")
    );
    assert_eq!(fetch(&fake, &bot, &v.file.id.0).await, voice_bytes);

    let m = message(&updates[3]);
    assert_eq!(m.id, MessageId(sticker_id));
    let s = m.sticker().expect("sticker");
    assert_eq!(s.emoji.as_deref(), Some("🙂"));
    assert_eq!(fetch(&fake, &bot, &s.file.id.0).await, b"RIFF....WEBP".to_vec());

    let m = message(&updates[4]);
    assert_eq!(m.id, MessageId(location));
    assert!(m.location().is_some());
}

#[tokio::test]
async fn fake_telegram_get_file_limits_and_download_errors() {
    let (fake, bot) = setup().await;
    let small = fake.add_file(vec![1; 1000]);
    let large = fake.add_file(vec![2; 2000]);
    fake.set_download_limit(1500);
    assert_eq!(fetch(&fake, &bot, &small).await, vec![1; 1000]);
    let err = bot.get_file(large.clone().into()).await.unwrap_err();
    assert!(
        matches!(&err, RequestError::Api(ApiError::Unknown(d)) if d == "Bad Request: file is too big"),
        "{err:?}"
    );
    let err = bot.get_file("unknown".into()).await.unwrap_err();
    assert!(matches!(err, RequestError::Api(ApiError::FileIdInvalid)), "{err:?}");
    assert_eq!(fake.file_bytes(&large), Some(vec![2; 2000]));
    assert_eq!(fake.file_bytes("unknown"), None);

    let file = bot.get_file(small.into()).await.unwrap();
    let response = download(&fake, "123456:WRONG", &file.path).await;
    assert_eq!(response.status(), 401);
    let response = download(&fake, TOKEN, "documents/no_such_file").await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["description"], json!("Not Found"));
}

#[tokio::test]
async fn fake_telegram_profile_photo_is_listed_and_downloadable() {
    let (fake, bot) = setup().await;
    fake.add_user(42, "Alice", None, None);
    let avatar = png_header(800, 800);
    fake.set_profile_photo(42, avatar.clone());
    let photos = bot
        .get_user_profile_photos(UserId(42))
        .await
        .expect("getUserProfilePhotos");
    assert_eq!(photos.total_count, 1);
    assert_eq!(photos.photos.len(), 1);
    let sizes = &photos.photos[0];
    assert_eq!(sizes.len(), 2);
    assert_eq!((sizes[0].width, sizes[1].width), (160, 640));
    assert_eq!(fetch(&fake, &bot, &sizes[1].file.id.0).await, avatar);
    let none = bot.get_user_profile_photos(UserId(7)).await.unwrap();
    assert_eq!(none.total_count, 0);
}

#[tokio::test]
async fn fake_telegram_message_reaction_updates_need_allowed_updates() {
    let (fake, bot) = setup().await;
    let alice = fake.add_user(42, "Alice", None, None);
    let id = fake.inject_text(CHAT, &alice, "react to me");
    // Not requested: no update is created.
    fake.inject_reaction(CHAT, &alice, id, &[], &["👍"]);
    assert_eq!(fake.pending_updates(), 1);

    let updates = bot
        .get_updates()
        .allowed_updates([AllowedUpdate::Message, AllowedUpdate::MessageReaction])
        .timeout(0)
        .await
        .expect("getUpdates");
    let next = updates[0].id.0 as i32 + 1;
    fake.inject_reaction(CHAT, &alice, id, &["👍"], &["🔥", "🎉"]);
    let updates = poll(&bot, next).await;
    assert_eq!(updates.len(), 1);
    match &updates[0].kind {
        UpdateKind::MessageReaction(r) => {
            assert_eq!(r.chat.id, ChatId(CHAT));
            assert_eq!(r.message_id, MessageId(id));
            assert_eq!(r.user().map(|u| u.id), Some(UserId(42)));
            let emoji =
                |list: &[ReactionType]| -> Vec<String> { list.iter().filter_map(|r| r.emoji().cloned()).collect() };
            assert_eq!(emoji(&r.old_reaction), vec!["👍"]);
            assert_eq!(emoji(&r.new_reaction), vec!["🔥", "🎉"]);
        }
        other => panic!("expected message_reaction, got {other:?}"),
    }
}

#[tokio::test]
async fn fake_telegram_media_caption_edits() {
    let (fake, bot) = setup().await;
    let sent = bot
        .send_animation(
            ChatId(CHAT),
            InputFile::memory(b"GIF89a\x10\0\x08\0".to_vec()).file_name("a.gif"),
        )
        .caption("before")
        .await
        .expect("sendAnimation");
    let animation = sent.animation().expect("an animation message");
    assert_eq!(
        animation.mime_type.as_ref().map(ToString::to_string).as_deref(),
        Some("image/gif")
    );
    let err = bot.edit_message_text(ChatId(CHAT), sent.id, "text").await.unwrap_err();
    assert!(matches!(err, RequestError::Api(_)), "{err:?}");
    let edited = bot
        .edit_message_caption(ChatId(CHAT), sent.id)
        .caption("<i>after</i>")
        .parse_mode(ParseMode::Html)
        .await
        .expect("editMessageCaption");
    assert_eq!(edited.caption(), Some("after"));
    assert!(edited.animation().is_some());
    assert_eq!(fake.edits(CHAT), vec![(sent.id.0, "<i>after</i>".to_owned())]);
    assert_eq!(fake.sent(CHAT)[0].method, "sendAnimation");

    let sticker = bot
        .send_sticker(
            ChatId(CHAT),
            InputFile::memory(b"RIFF\0\0\0\0WEBPVP8X".to_vec()).file_name("s.webp"),
        )
        .emoji("🙂")
        .await
        .expect("sendSticker");
    assert_eq!(sticker.sticker().unwrap().emoji.as_deref(), Some("🙂"));
}

const FORUM: i64 = -1009876543210;

/// The description of a Bot API error teloxide has no variant for.
fn unknown_error(err: &RequestError) -> &str {
    match err {
        RequestError::Api(ApiError::Unknown(description)) => description,
        other => panic!("expected an error without a teloxide variant, got {other:?}"),
    }
}

/// A raw Bot API call (to see JSON teloxide would not show as is).
async fn raw_call(fake: &FakeTelegram, method: &str, params: Value) -> Value {
    reqwest::Client::new()
        .post(format!("{}/bot{TOKEN}/{method}", fake.api_url()))
        .json(&params)
        .send()
        .await
        .expect("raw Bot API call")
        .json()
        .await
        .expect("JSON answer")
}

fn thread(id: i32) -> ThreadId {
    ThreadId(MessageId(id))
}

#[tokio::test]
async fn fake_telegram_topic_messages_carry_thread_and_creation_reply() {
    let (fake, bot) = setup().await;
    fake.add_forum(FORUM, "Forum");
    let alice = fake.add_user(42, "Alice", None, None);
    let bob = fake.add_user(43, "Bob", None, None);
    let topic = fake.create_topic(FORUM, &alice, "Deploys");
    let in_topic = fake.inject_topic_text(FORUM, topic, &alice, "shipping now");
    let general = fake.inject_text(FORUM, &alice, "lunch?");
    let reply_in_topic = fake.inject_message(FORUM, &bob, "which build?", Value::Null, Some(in_topic));
    let reply_in_general = fake.inject_message(FORUM, &bob, "yes", Value::Null, Some(general));
    let renamed = fake.edit_topic(FORUM, &alice, topic, "Deploys (prod)");

    let updates = poll(&bot, 0).await;
    assert_eq!(updates.len(), 6);
    let created = message(&updates[0]);
    assert_eq!(created.id, MessageId(topic));
    assert_eq!(
        created.forum_topic_created().expect("forum_topic_created").name,
        "Deploys"
    );
    assert_eq!(created.thread_id, Some(thread(topic)));
    assert!(created.is_topic_message);
    assert!(
        created.reply_to_message().is_none(),
        "the creation message replies to nothing"
    );
    assert_eq!(serde_json::to_value(&created.chat).unwrap()["is_forum"], json!(true));

    let m = message(&updates[1]);
    assert_eq!((m.id, m.text()), (MessageId(in_topic), Some("shipping now")));
    assert_eq!(m.thread_id, Some(thread(topic)));
    assert!(m.is_topic_message);
    let origin = m
        .reply_to_message()
        .expect("a topic message shows the topic's creation");
    assert_eq!(origin.id, MessageId(topic));
    assert_eq!(origin.forum_topic_created().expect("creation").name, "Deploys");

    let m = message(&updates[2]);
    assert_eq!(m.thread_id, None, "General: no message_thread_id");
    assert!(!m.is_topic_message);
    assert!(m.reply_to_message().is_none());

    let m = message(&updates[3]);
    assert_eq!(m.id, MessageId(reply_in_topic));
    assert_eq!(m.thread_id, Some(thread(topic)), "a reply stays in its target's topic");
    assert!(m.is_topic_message);
    assert_eq!(m.reply_to_message().map(|r| r.id), Some(MessageId(in_topic)));

    // As on Telegram, a reply outside topics names its reply chain, without is_topic_message.
    let m = message(&updates[4]);
    assert_eq!(m.id, MessageId(reply_in_general));
    assert_eq!(m.thread_id, Some(thread(general)));
    assert!(!m.is_topic_message);
    assert_eq!(m.reply_to_message().map(|r| r.id), Some(MessageId(general)));

    let m = message(&updates[5]);
    assert_eq!(m.id, MessageId(renamed));
    assert_eq!(
        m.forum_topic_edited().expect("forum_topic_edited").name.as_deref(),
        Some("Deploys (prod)")
    );
    assert_eq!(m.thread_id, Some(thread(topic)));
    // (teloxide keeps `reply_to_message` of ordinary messages only)
    let raw = fake.message(FORUM, renamed).expect("stored");
    assert_eq!(raw["reply_to_message"]["message_id"], json!(topic));
    assert_eq!(fake.topic_name(FORUM, topic).as_deref(), Some("Deploys (prod)"));
    assert_eq!(fake.topics(FORUM), vec![(topic, "Deploys (prod)".to_owned())]);

    let chat = raw_call(&fake, "getChat", json!({ "chat_id": FORUM })).await;
    assert_eq!(chat["result"]["is_forum"], json!(true));
    let chat = raw_call(&fake, "getChat", json!({ "chat_id": CHAT })).await;
    assert_eq!(chat["result"].get("is_forum"), None);
}

#[tokio::test]
async fn fake_telegram_sends_go_to_existing_topics_only() {
    let (fake, bot) = setup().await;
    fake.add_forum(FORUM, "Forum");
    let alice = fake.add_user(42, "Alice", None, None);
    let deploys = fake.create_topic(FORUM, &alice, "Deploys");
    let alerts = fake.create_topic(FORUM, &alice, "Alerts");
    let general = fake.inject_text(FORUM, &alice, "hello");
    let in_deploys = fake.inject_topic_text(FORUM, deploys, &alice, "v1.2 out");

    let sent = bot
        .send_message(ChatId(FORUM), "noted")
        .message_thread_id(thread(deploys))
        .await
        .expect("send to a topic");
    assert_eq!(sent.thread_id, Some(thread(deploys)));
    assert!(sent.is_topic_message);
    assert_eq!(sent.reply_to_message().map(|r| r.id), Some(MessageId(deploys)));
    let to_general = bot
        .send_message(ChatId(FORUM), "hi all")
        .await
        .expect("send to General");
    assert_eq!(to_general.thread_id, None);
    assert!(!to_general.is_topic_message);
    let reply = bot
        .send_message(ChatId(FORUM), "congrats")
        .reply_parameters(ReplyParameters::new(MessageId(in_deploys)))
        .await
        .expect("reply without message_thread_id");
    assert_eq!(
        reply.thread_id,
        Some(thread(deploys)),
        "a reply goes to its target's topic"
    );
    let photo = bot
        .send_photo(ChatId(FORUM), InputFile::memory(png_header(10, 10)).file_name("a.png"))
        .message_thread_id(thread(alerts))
        .await
        .expect("photo to a topic");
    assert_eq!(photo.thread_id, Some(thread(alerts)));

    let sent_all = fake.sent(FORUM);
    let threads: Vec<Option<i32>> = sent_all.iter().map(|s| s.thread).collect();
    assert_eq!(threads, vec![Some(deploys), None, Some(deploys), Some(alerts)]);
    assert_eq!(fake.sent_in_topic(FORUM, Some(deploys)).len(), 2);
    assert_eq!(fake.sent_in_topic(FORUM, None)[0].text, "hi all");

    // Not a topic: an unknown id, a General message, the General topic's id 1, a non-forum chat.
    for (chat, id) in [(FORUM, 999), (FORUM, general), (FORUM, 1), (CHAT, 1)] {
        let err = bot
            .send_message(ChatId(chat), "lost")
            .message_thread_id(thread(id))
            .await
            .unwrap_err();
        assert_eq!(
            unknown_error(&err),
            "Bad Request: message thread not found",
            "{chat}/{id}"
        );
    }
    let err = bot
        .send_photo(ChatId(FORUM), InputFile::memory(png_header(10, 10)).file_name("a.png"))
        .message_thread_id(thread(4242))
        .await
        .unwrap_err();
    assert_eq!(unknown_error(&err), "Bad Request: message thread not found");
    for (method, extra) in [
        ("sendPoll", json!({ "question": "ok?", "options": ["yes", "no"] })),
        (
            "sendVenue",
            json!({ "latitude": 1.0, "longitude": 2.0, "title": "Hq", "address": "Main st" }),
        ),
    ] {
        let mut params = json!({ "chat_id": FORUM, "message_thread_id": 4242 });
        params
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let answer = raw_call(&fake, method, params.clone()).await;
        assert_eq!(
            answer["description"],
            json!("Bad Request: message thread not found"),
            "{method}"
        );
        params["message_thread_id"] = json!(alerts);
        let answer = raw_call(&fake, method, params).await;
        assert_eq!(answer["result"]["message_thread_id"], json!(alerts), "{method}");
    }
    assert_eq!(fake.sent_in_topic(FORUM, Some(alerts)).len(), 3);
    assert_eq!(fake.sent(FORUM).len(), 6, "failed sends are not recorded");

    // A reply into another topic: posted in the named topic, the target shown as external_reply.
    let answer = raw_call(
        &fake,
        "sendMessage",
        json!({ "chat_id": FORUM, "text": "see there", "message_thread_id": alerts,
                "reply_parameters": { "message_id": in_deploys } }),
    )
    .await;
    let result = &answer["result"];
    assert_eq!(result["message_thread_id"], json!(alerts));
    assert_eq!(result["reply_to_message"]["message_id"], json!(alerts));
    assert_eq!(result["external_reply"]["message_id"], json!(in_deploys));
    assert_eq!(result["external_reply"]["origin"]["sender_user"]["id"], json!(42));
    // What teloxide 0.17 makes of it (update this when upgrading teloxide): an `external_reply`
    // without content fails to parse, so the whole message falls back to `MessageKind::Empty`
    // and its text is lost; without `external_reply` the same message parses whole.
    let parsed: Message = serde_json::from_value(result.clone()).expect("parses");
    assert!(matches!(parsed.kind, MessageKind::Empty {}), "{parsed:?}");
    let mut plain = result.clone();
    plain.as_object_mut().unwrap().remove("external_reply");
    let parsed: Message = serde_json::from_value(plain).expect("parses");
    assert_eq!(parsed.text(), Some("see there"));
}

#[tokio::test]
async fn fake_telegram_create_forum_topic_needs_rights_and_is_seen_by_the_bot() {
    let (fake, bot) = setup().await;
    fake.add_forum(FORUM, "Forum");
    let alice = fake.add_user(42, "Alice", None, None);
    let me = fake.bot_user();
    let topic = bot
        .create_forum_topic(ChatId(FORUM), "Bridge")
        .await
        .expect("createForumTopic");
    assert_eq!(topic.name, "Bridge");
    assert_eq!(serde_json::to_value(&topic).unwrap()["icon_color"], json!(7322096));
    let id = topic.thread_id.0.0;
    assert_eq!(fake.topic_name(FORUM, id).as_deref(), Some("Bridge"));
    // The Bot API server delivers a bot's own topic service messages (need_skip_update_message).
    let updates = poll(&bot, 0).await;
    assert_eq!(updates.len(), 1);
    let created = message(&updates[0]);
    assert_eq!(created.id, MessageId(id));
    assert_eq!(created.from.as_ref().map(|u| u.id), Some(UserId(me.id as u64)));
    assert_eq!(created.forum_topic_created().expect("creation").name, "Bridge");
    let offset = updates[0].id.0 as i32 + 1;

    let member = raw_call(&fake, "getChatMember", json!({ "chat_id": FORUM, "user_id": me.id })).await;
    assert_eq!(member["result"]["can_manage_topics"], json!(true));
    let err = bot.create_forum_topic(ChatId(CHAT), "No").await.unwrap_err();
    assert_eq!(unknown_error(&err), "Bad Request: the chat is not a forum");
    let err = bot.create_forum_topic(ChatId(FORUM), "  ").await.unwrap_err();
    assert_eq!(unknown_error(&err), "Bad Request: title must be non-empty");

    let theirs = fake.create_topic(FORUM, &alice, "Alice's");
    fake.set_topic_rights(me.id, FORUM, false);
    let member = raw_call(&fake, "getChatMember", json!({ "chat_id": FORUM, "user_id": me.id })).await;
    assert_eq!(member["result"]["can_manage_topics"], json!(false));
    let err = bot.create_forum_topic(ChatId(FORUM), "More").await.unwrap_err();
    assert_eq!(unknown_error(&err), "Bad Request: not enough rights to create a topic");
    let err = bot
        .edit_forum_topic(ChatId(FORUM), thread(theirs))
        .name("Mine now")
        .await
        .unwrap_err();
    assert_eq!(unknown_error(&err), "Bad Request: not enough rights to edit the topic");
    // Its own topic the bot may still rename.
    bot.edit_forum_topic(ChatId(FORUM), thread(id))
        .name("Bridge 2")
        .await
        .expect("rename own topic");
    assert_eq!(fake.topic_name(FORUM, id).as_deref(), Some("Bridge 2"));
    let err = bot
        .edit_forum_topic(ChatId(FORUM), thread(id))
        .name("Bridge 2")
        .await
        .unwrap_err();
    assert_eq!(unknown_error(&err), "Bad Request: TOPIC_NOT_MODIFIED");
    let err = bot
        .edit_forum_topic(ChatId(FORUM), thread(777))
        .name("x")
        .await
        .unwrap_err();
    assert_eq!(unknown_error(&err), "Bad Request: TOPIC_ID_INVALID");

    let updates = poll(&bot, offset).await;
    let kinds: Vec<String> = updates
        .iter()
        .map(|u| {
            let m = message(u);
            let kind = if m.forum_topic_created().is_some() {
                "created"
            } else {
                "edited"
            };
            format!("{kind}:{}", m.thread_id.map_or(0, |t| t.0.0))
        })
        .collect();
    assert_eq!(kinds, vec![format!("created:{theirs}"), format!("edited:{id}")]);
}

#[tokio::test]
async fn fake_telegram_unconfirmed_updates_expire_after_24_hours() {
    let (fake, bot) = setup().await;
    let alice = fake.add_user(42, "Alice", None, None);
    let hour = Duration::from_secs(3600);
    let confirmed = fake.inject_text(CHAT, &alice, "read in time");
    let updates = poll(&bot, 0).await;
    let offset = updates[0].id.0 as i32 + 1;
    assert_eq!(message(&updates[0]).id, MessageId(confirmed));
    poll(&bot, offset).await; // confirms it

    let start = fake.unix_time();
    let old = fake.inject_text(CHAT, &alice, "sent before the standby");
    fake.advance_clock(23 * hour);
    let newer = fake.inject_text(CHAT, &alice, "sent 23 h later");
    assert_eq!(fake.pending_updates(), 2, "23 h old: still kept");
    assert_eq!(fake.expired_updates(), 0);
    fake.advance_clock(hour + Duration::from_secs(1));
    assert_eq!(fake.pending_updates(), 1, "24 h old: dropped");
    assert_eq!(fake.expired_updates(), 1);
    assert!(fake.unix_time() >= start + 24 * 3600);

    let updates = poll(&bot, offset).await;
    let ids: Vec<MessageId> = updates.iter().map(|u| message(u).id).collect();
    assert_eq!(ids, vec![MessageId(newer)], "message {old} is lost");
    let date = message(&updates[0]).date.timestamp();
    assert!(
        date >= start + 23 * 3600,
        "dates follow the fake's clock: {date} vs {start}"
    );

    // The 23 h old one goes after one more day; a callback query lives 150 s.
    fake.inject_update(
        "callback_query",
        json!({"id": "1", "from": alice.to_json(), "chat_instance": "1"}),
    );
    fake.advance_clock(Duration::from_secs(151));
    assert_eq!(fake.expired_updates(), 2, "callback queries live 150 s");
    fake.advance_clock(24 * hour);
    assert_eq!(fake.expired_updates(), 3);
    assert!(poll(&bot, offset).await.is_empty());
    // Updates made after the jump live a full day again.
    let fresh = fake.inject_text(CHAT, &alice, "after the standby");
    fake.advance_clock(hour);
    let updates = poll(&bot, offset).await;
    assert_eq!(
        updates.iter().map(|u| message(u).id).collect::<Vec<_>>(),
        vec![MessageId(fresh)]
    );
}
